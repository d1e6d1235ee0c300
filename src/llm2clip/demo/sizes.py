"""How big the demo is: the full run and the `--fast` smoke run.

The cost is the LLM (SmolLM2-135M, about 450 tokens/s on 2 CPU cores): every caption the
two LLM2CLIP models see is embedded once per caption encoder (stage 1's and the raw
LLM's, Table 6). Approximate SmolLM2 tokens per caption: short 11, long 129, walk 174,
the 13 translated shorts 294 together; a WordNet pair 20.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DemoSize:
    n_train: int  # scenes whose captions train stage 1
    n_test: int  # held-out scenes: CRA and retrieval
    n_stage2: int  # the first n_stage2 training scenes, with images, train the baseline and stage 2
    stage1_steps: int
    stage1_batch: int
    stage2_epochs: int
    stage2_batch: int
    baseline_steps: int
    n_val: int  # validation scenes (images + captions): every choice is made on them, never on test
    n_test_families: int  # near-duplicate families (near_duplicates.py) of the test split
    n_val_families: int  # ... of the validation split
    n_stage2_families: int  # ... among the stage-2 (and baseline) training pairs, walk as the long caption
    n_multilingual: int  # the first test scenes, retrieved by their caption in each of 13 languages
    n_wordnet: int  # WordNet pairs mixed into stage 1 (data/wordnet.py)
    n_wordnet_heldout: int  # held-out WordNet pairs: CRA on text of another kind
    text_pair_ratio: float  # share of stage-1 pairs drawn from WordNet


# stage2_epochs and baseline_steps: each side's best of 150/300/600 steps of 64 pairs on the
# validation split (python -m llm2clip.demo.validation; 100 epochs of 384 pairs = 600 steps),
# as is LLM2CLIP's 1-block adaptor (configs/stage2/demo.yaml) over 2 blocks
FULL = DemoSize(n_train=1200, n_test=200, n_stage2=256, stage1_steps=12, stage1_batch=32,
                stage2_epochs=100, stage2_batch=64, baseline_steps=150, n_val=64, n_test_families=25,
                n_val_families=10, n_stage2_families=32, n_multilingual=50, n_wordnet=2000,
                n_wordnet_heldout=200, text_pair_ratio=0.25)
FAST = DemoSize(n_train=48, n_test=16, n_stage2=16, stage1_steps=4, stage1_batch=8,
                stage2_epochs=10, stage2_batch=8, baseline_steps=20, n_val=4, n_test_families=2,
                n_val_families=1, n_stage2_families=1, n_multilingual=4, n_wordnet=64,
                n_wordnet_heldout=16, text_pair_ratio=0.25)
