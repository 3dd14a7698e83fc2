"""Other people's faces: `agegender-evaluate` scores the models on a user's labelled faces,
`agegender-calibrate` refits their age correction, range and gender temperature there (and,
with --adapt, model B's heads). Imports the core, evaluate (scores and calibration, never a
copy), models and serve (reading images, finding faces, predicting); never training.
"""
