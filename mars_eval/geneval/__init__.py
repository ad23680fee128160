"""GenEval (Ghosh et al. 2023, github.com/djghosh13/geneval): object-focused text-to-image evaluation.

One concept per module:
    metadata.py   the prompt metadata (`evaluation_metadata.jsonl`): task tag, include / exclude clauses
    rules.py      the official decision for one image from its detections (pure)
    summary.py    per-task accuracy and the overall score (mean of the task means)
    detector.py   instance segmentation with transformers' Mask2Former from a local directory
    color.py      the object colour by CLIP zero-shot (open_clip, local weights) on the masked crop
    folder.py     image folders in GenEval's layout (`00000/metadata.jsonl`, `00000/samples/0000.png`)
    world.py      the world analogue: GenEval prompts from the world's lexicon, scored by the world judges
The suite (generate -> score -> rows) is `mars_eval.suites.geneval.run_geneval`.
"""
