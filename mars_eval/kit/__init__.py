"""World kits: the pretrained parts of the recipe on the embedded world, shipped like a real-scale user's
downloads (Qwen2, a VQGAN, CLIP, judges), so runs train only MARS Stages I-III.

A kit is a directory (shipped ones: `mars_eval/kits/NAME/`) holding the folders `Artifacts` builds -
`tokenizer/`, `vq/`, `llm/` (the Stage 0 model), `clip/`, `judges/` - plus `manifest.json` (what each part was
built from, every file's sha256, figures, commit, command) and a generated `README.md`.

    manifest.py  the manifest dataclasses, hashing, the tables a part is built from
    store.py     finding kits (`[kit]` preset table) and the opened `Kit` that `Artifacts` reads
    figures.py   each part's recorded figures and the checks `kit verify` measures again
    build.py     `kit build`;  verify.py: `kit verify`
"""

from mars_eval.kit.manifest import KIT_FORMAT, PARTS, KitFile, KitManifest, KitPart
from mars_eval.kit.store import Kit, check_kit_table, find_kit, kit_dir_of, known_kits

__all__ = ["KIT_FORMAT", "PARTS", "Kit", "KitFile", "KitManifest", "KitPart", "check_kit_table", "find_kit",
           "kit_dir_of", "known_kits"]
