"""vtfusion training: SynthShapes, the tokenizer, metrics, the `Trainer` entry point (`training.train`), the main job
(`training.main_job`) and the fusion study (`training.fusion_study`)."""
