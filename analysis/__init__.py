"""Reading sweeps: trial tables now; importance, plots and claims build on them."""
