"""Disease classification (binary and multi-class, 2D and 3D): the ``classification`` task.

``config`` holds its typed config, ``engine`` trains and predicts (ensembles, calibration,
abstention), ``task`` registers the task that ``medanomaly train/evaluate/predict/tune`` dispatch to.
"""
