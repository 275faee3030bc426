"""vtfusion benchmarks: speed and memory side by side with transformers' CLIP and BLIP at a matched size.

`python -m benchmarks.run` (what `make bench` runs) prints one markdown table and writes `benchmarks/results.json`.
"""
