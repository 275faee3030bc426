"""vtfusion training: SynthShapes, the tokenizer, metrics, the `Trainer` entry point (`training.train`), the main job
(`training.main_job`) and the fusion study (`training.fusion_study`).

OpenMP keeps its default (idle threads spin): `OMP_WAIT_POLICY=PASSIVE`, set here before, made an idle machine's
steps 26-58% slower (30 main-job pre-training steps: 19.4 s against 15.4 s; the bench's ITC step: 178 against
113 ms). A busy machine is handled by timing steps instead (`training.machine`).
"""
