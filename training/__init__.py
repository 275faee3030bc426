"""vtfusion training: SynthShapes, the tokenizer, metrics, the `Trainer` entry point (`training.train`), the main job
(`training.main_job`) and the fusion study (`training.fusion_study`)."""

import os


# Idle OpenMP threads sleep instead of spinning. On a CPU shared with other work, spinning threads stall everyone:
# two threads of a training step measured ~10x slower under load without this. `python -m training.*` imports this
# package before torch, so the setting reaches the OpenMP runtime when torch loads it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
