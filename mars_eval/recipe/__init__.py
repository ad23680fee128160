"""The paper's training recipe on concrete data: world corpora -> token sequences per task -> stage objectives.

sequences.py  pure builders of joint-vocabulary sequences (T2I, captioning, Stage II, Stage III triplets)
data.py       world corpora VQ-encoded once (cached by VQ checkpoint and world), sampled by (seed, step)
"""
