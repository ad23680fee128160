"""Generic training engine: a stage supplies (build_model, loss_fn, data); see launch.run_training and contract.py."""
