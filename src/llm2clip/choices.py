"""Every setting that takes one of a fixed list of values, each list defined once: the
typed configs validate against it (config.py `setting(choices=...)`), and the code that
acts on a setting and the command line use the same list.

Plain lists live here. A list whose every name has code behind it is that code's
registry, next to the code, so adding a value is one entry where it is implemented:

- poolings: `text/pooling.py: POOLINGS` (name -> pooling function)
- adaptor kinds: `adaptor.py: ADAPTORS` (name -> adaptor class)
- stage-2 losses: `losses.py: LOSSES` (name -> loss function, and whether it learns a bias)
- vision towers: `vision/__init__.py: TOWERS` (kind -> tower class)
- retrieval benchmark readers: `eval/datasets/__init__.py: RETRIEVAL_READERS` (kind -> reader)
"""

DEVICES = ("auto", "cpu", "cuda")  # auto: CUDA when a GPU is visible, else the CPU (see devices.py)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # compute precision; auto: bf16 on GPUs that support it
WEIGHT_DTYPES = ("float32", "bfloat16", "float16", "fp32", "bf16", "fp16")  # how LLM weights are loaded
SCHEDULES = ("linear", "cosine", "constant")  # learning rate after warmup
MODES = ("offline", "online_frozen", "online_lora")  # stage-2 text side (paper Table 11)
# stage-1 contrastive term (paper Table 9): two captions of one image, one caption twice
# (dropout as the augmentation), or none (MNTP alone)
SIMCSE_MODES = ("supervised", "unsupervised", "none")
