"""In-batch caption retrieval: for each held-out image, does its own caption rank first among the batch's?

The held-out set is cut into consecutive batches of `batch` pairs (a last, smaller batch is dropped so every
image competes against the same number of captions). A hit is scored by caption *text*: when two images in a
batch have the same caption, ranking either copy first is correct.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def embed(model, images: torch.Tensor, tokens: torch.Tensor, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm image (N, E) and text (N, E) embeddings; `images` already normalised floats."""
    fi, ft = [], []
    for i in range(0, images.shape[0], chunk):
        fi.append(torch.nn.functional.normalize(model.encode_image(images[i:i + chunk]).float(), dim=-1))
        ft.append(torch.nn.functional.normalize(model.encode_text(tokens[i:i + chunk]).float(), dim=-1))
    return torch.cat(fi), torch.cat(ft)


def top1_in_batch(img_emb: torch.Tensor, txt_emb: torch.Tensor, captions: list[str], batch: int) -> dict:
    """{'top1': fraction of images whose best caption in their batch is their own, 'n': images scored,
    'chance': 1 / batch}."""
    n = (img_emb.shape[0] // batch) * batch
    if n == 0:
        return {"top1": float("nan"), "n": 0, "chance": 1.0 / batch}
    hits = 0
    for b in range(0, n, batch):
        sims = img_emb[b:b + batch] @ txt_emb[b:b + batch].T  # (batch, batch)
        best = sims.argmax(dim=1).tolist()
        hits += sum(captions[b + j] == captions[b + i] for i, j in enumerate(best))
    return {"top1": hits / n, "n": n, "chance": 1.0 / batch}
