"""The run as a list of steps over one RunState (DEVELOPERS.md "A run is a list of steps over one state")."""
