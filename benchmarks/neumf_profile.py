"""Where a NeuMF epoch goes: our epoch (RecBole's NeuMF, the lean batches, Adam) on ml-100k under
``torch.profiler``, one thread, grouped by what the operators do; and the cost of one dropout
mask of NeuMF's MLP input (2048 x 128) made as ``nn.Dropout`` makes it (``bernoulli_``) and as
``rand < keep`` would (the same Bernoulli distribution, another random stream).

    python -m benchmarks.neumf_profile

Prints one JSON line: the epoch's seconds, each group's share of the operators' self time,
and the two masks' milliseconds (mean of 300 calls).
"""
import json
import time

import torch

GROUPS = {   # profiler operator name -> what it is in NeuMF's epoch
    "aten::mm": "matmul", "aten::addmm": "matmul",
    "aten::bernoulli_": "dropout masks",
    "aten::mul": "elementwise products (GMF, dropout scaling, backward)",
    "aten::threshold_backward": "ReLU", "aten::clamp_min": "ReLU", "aten::relu": "ReLU",
    "aten::embedding_dense_backward": "embedding lookups", "aten::index_select": "embedding lookups",
    "aten::embedding": "embedding lookups",
}


def mask_ms(calls: int = 300) -> dict:
    x = torch.randn(2048, 128)

    def timed(make) -> float:
        make()
        start = time.perf_counter()
        for _ in range(calls):
            make()
        return (time.perf_counter() - start) / calls * 1e3
    return {"bernoulli_": timed(lambda: torch.empty_like(x).bernoulli_(0.9)),
            "rand_lt_keep": timed(lambda: torch.rand_like(x) < 0.9)}


def main() -> None:
    from torch.profiler import ProfilerActivity, profile

    from benchmark.core.data import load_dataset, split_dataset
    from benchmarks.test_bench_training import lean_trainer, our_epoch
    torch.set_num_threads(1)
    built, trainer, optimizer = lean_trainer(split_dataset(load_dataset("ml-100k"), seed=0), "NeuMF")
    our_epoch(built, trainer, optimizer)   # warm-up
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        our_epoch(built, trainer, optimizer)
    seconds = time.perf_counter() - start
    self_us: dict = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            group = GROUPS.get(event.key, "other operators")
            self_us[group] = self_us.get(group, 0.0) + event.self_cpu_time_total
    total = sum(self_us.values())
    shares = {group: round(us / total, 3) for group, us in sorted(self_us.items(), key=lambda kv: -kv[1])}
    print(json.dumps({"epoch_s_profiled": round(seconds, 3), "share_of_operator_time": shares,
                      "mask_ms": {k: round(v, 3) for k, v in mask_ms().items()}}))


if __name__ == "__main__":
    main()
