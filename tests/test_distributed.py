"""ITC + ITM under torch.distributed: 2 CPU processes (gloo), each with half of a global batch, compute the losses one
process computes on the whole batch, and their gradients averaged over processes (what DDP applies) are its gradients.

The hard negatives are drawn with Gumbel noise from the global similarity matrix, so every process seeds its RNG as
the single process does right before the forward and draws the same negatives.
"""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_models import random_batch, tiny_config

from modeling_vtfusion import VTFusionForImageTextRetrieval


WORLD_SIZE = 2
GLOBAL_BATCH = 8
MODEL_SEED, FORWARD_SEED = 0, 1
LOSSES = ("loss", "itc_loss", "itm_loss")


@pytest.fixture(autouse=True, scope="module")
def one_thread_per_process():
    """Two workers with one thread each share 2 cores; more threads oversubscribe them and slow every op 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def global_batch() -> dict:
    """8 pairs padded to 12 tokens. Texts 1 and 4-7 are at most 8 tokens long, so process 1 holds a batch padded to
    8 tokens only; text 5 repeats text 1 (on the other process), so it must never be text 1's negative."""
    batch = random_batch(batch_size=GLOBAL_BATCH, length=12, seed=0)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    for row in (1, 4, 5, 6):
        ids[row, 7], ids[row, 8:], mask[row, 8:] = 3, 0, 0
    ids[5] = ids[1]
    return batch


def local_batch(batch: dict, rank: int) -> dict:
    """This process's half of the batch, with the padding columns that none of its texts needs cut off."""
    per_rank = GLOBAL_BATCH // WORLD_SIZE
    local = {name: value[rank * per_rank : (rank + 1) * per_rank] for name, value in batch.items()}
    length = int(local["attention_mask"].sum(1).max())
    local["input_ids"], local["attention_mask"] = local["input_ids"][:, :length], local["attention_mask"][:, :length]
    return local


def losses_and_gradients(batch: dict) -> dict:
    """One training forward and backward of a freshly seeded tiny retrieval model."""
    torch.manual_seed(MODEL_SEED)
    model = VTFusionForImageTextRetrieval(tiny_config()).train()
    torch.manual_seed(FORWARD_SEED)
    out = model(**batch)
    out.loss.backward()
    return {
        "losses": {name: out[name].detach() for name in LOSSES},
        "grads": {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None},
        "text_length": batch["input_ids"].shape[1],
    }


def run_rank(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.save(losses_and_gradients(local_batch(global_batch(), rank)), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def single_and_per_rank(tmp_path_factory):
    """(the single process's result on the global batch, [each process's result on its half])."""
    single = losses_and_gradients(global_batch())
    out_dir = tmp_path_factory.mktemp("ranks")
    # fork, not spawn: the workers inherit the imported modules instead of importing transformers again (~8 s)
    mp.start_processes(run_rank, (free_port(), str(out_dir)), nprocs=WORLD_SIZE, start_method="fork")
    return single, [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


def test_processes_hold_texts_padded_to_different_lengths(single_and_per_rank):
    _, per_rank = single_and_per_rank
    assert [result["text_length"] for result in per_rank] == [12, 8]


@pytest.mark.parametrize("name", LOSSES)
def test_every_process_computes_the_single_process_loss(single_and_per_rank, name):
    single, per_rank = single_and_per_rank
    for rank, result in enumerate(per_rank):
        torch.testing.assert_close(
            result["losses"][name], single["losses"][name], atol=1e-5, rtol=0, msg=f"rank {rank}"
        )


def test_gradients_averaged_over_processes_equal_the_single_process_gradients(single_and_per_rank):
    single, per_rank = single_and_per_rank
    assert {
        "vtfusion.logit_scale",
        "itm_head.weight",
        "vtfusion.vision_model.embeddings.patch_embeddings.projection.weight",
    } <= set(single["grads"])
    for name, grad in single["grads"].items():
        averaged = sum(result["grads"][name] for result in per_rank) / WORLD_SIZE
        torch.testing.assert_close(averaged, grad, atol=1e-5, rtol=1e-4, msg=name)
