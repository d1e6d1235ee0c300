"""Every setting that takes one of a fixed list of values, each list defined once here:
the typed configs validate against these (config.py `setting(choices=...)`), and the
code that acts on a setting and the command line use the same lists."""

DEVICES = ("auto", "cpu", "cuda")  # auto: CUDA when a GPU is visible, else the CPU (see devices.py)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # compute precision; auto: bf16 on GPUs that support it
WEIGHT_DTYPES = ("float32", "bfloat16", "float16", "fp32", "bf16", "fp16")  # how LLM weights are loaded
POOLINGS = ("mean", "last", "weighted_mean")  # caption embedding = pooled LLM hidden states
SCHEDULES = ("linear", "cosine", "constant")  # learning rate after warmup
ADAPTOR_KINDS = ("mlp", "transformer")  # stage-2 adaptor (adaptor.py)
MODES = ("offline", "online_frozen", "online_lora")  # stage-2 text side (paper Table 11)
LOSSES = ("clip", "siglip")  # stage-2 contrastive loss
