"""Regenerate `spacy_val_parses.json`: spaCy's parse of every T2I-CompBench `_val` prompt.

Run it in a separate environment that has spaCy and an English pipeline (the project itself does not
depend on spaCy):  `python -m mars_eval.compbench._make_spacy_table PIPELINE_PACKAGE OUT.json [WHEEL]`.
The official scorer used `en_core_web_sm` 3.5.0 with spaCy 3.5.3; that wheel is not on PyPI. The shipped
table records which pipeline produced it, so a table made with the official model can replace it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path

from mars_eval.prompts import COMPBENCH_CATEGORIES, PromptSet


def main(argv: list[str]) -> None:
    import spacy  # only in the generating environment

    package, out = argv[0], Path(argv[1])
    nlp = importlib.import_module(package).load()
    wheel_sha = hashlib.sha256(Path(argv[2]).read_bytes()).hexdigest() if len(argv) > 2 else None
    sets = [f"{c}_val" for c in COMPBENCH_CATEGORIES] + [f"complex_val_{k}" for k in ("action", "spatial", "spatialaction")]
    prompts = sorted({t for s in sets for t in PromptSet.builtin(s).texts})
    parses = {}
    for text in prompts:
        doc = nlp(text)
        parses[text] = {
            "tokens": [t.text for t in doc],
            "pos": [t.pos_ for t in doc],
            "idx": [t.idx for t in doc],
            "noun_chunks": [c.text for c in doc.noun_chunks],
        }
    table = {
        "producer": {
            "spacy_version": spacy.__version__,
            "pipeline_package": package,
            "pipeline_name": nlp.meta["name"],
            "pipeline_version": nlp.meta["version"],
            "wheel_sha256": wheel_sha,
        },
        "parses": parses,
    }
    out.write_text(json.dumps(table, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{len(parses)} prompts -> {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
