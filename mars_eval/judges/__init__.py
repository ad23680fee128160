"""World judges: the embedded world's analogues of T2I-CompBench's BLIP-VQA, detector and CLIP judges.

    world_detector.py        the CNN (CenterNet-style) that finds objects and reads their attributes
    world_targets.py         training targets from a scene's drawn objects
    world_detector_train.py  training on a world's corpora + freshly rendered scenes
    world_detector_eval.py   held-out detector metrics and the Platt calibration of its scores
    world_decode.py          maps -> detections (any image size)
    world_rules.py           per-category scores from detections + the prompt's parse (pure)
    world_judges.py          WorldJudges.load(dir).score(category, image, prompt, lang); train_world_judges
    world_corrupt.py         prompt-falsifying scene edits for calibration
    world_calibration.py     judge_calibration(world_dir, n, seed) -> accuracy rows (clean and VQ renders)

Judges see pixels and the prompt only; the world's ground truth is used for training and calibration.
"""
