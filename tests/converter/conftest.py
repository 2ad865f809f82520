import pytest


@pytest.fixture(autouse=True)
def one_torch_thread(request):
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits when the other core is busy (10x on gradcheck).

    Only for tests that already imported torch: the others must keep working without it."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
