"""The native side of the DSPy jobs benchmark: the same evaluate and compile as
benchmarks/dspy_jobs.exs sends through `dspex serve`, run by DSPy in this one process.

usage: python benchmarks/dspy_jobs_native.py API_BASE MODEL EXAMPLES THREADS TRAIN  (prints one JSON line)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    api_base, model, examples, threads, train = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    import dspy

    from bridge.adapters.dspy.metrics import resolve_metric
    from learnable_task import right_answer
    from dspy_jobs_data import dataset

    metric = resolve_metric("exact_match", ["answer"])  # the metric the worker uses, for a fair match
    lm = dspy.LM(model, api_base=api_base, api_key="sk-bench-not-a-key", cache=False)
    devset = [dspy.Example(**row).with_inputs("question") for row in dataset(examples, right_answer)]
    trainset = [dspy.Example(**row).with_inputs("question") for row in dataset(train, right_answer)]
    with dspy.context(lm=lm):
        started = time.perf_counter()
        result = dspy.Evaluate(devset=devset, metric=metric, num_threads=threads, display_progress=False,
                               max_errors=len(devset))(dspy.Predict("question -> answer"))
        evaluate_s = time.perf_counter() - started
        started = time.perf_counter()
        compiled = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=4, max_labeled_demos=4).compile(
            dspy.Predict("question -> answer"), trainset=trainset)
        compile_s = time.perf_counter() - started
    print(json.dumps({"evaluate_s": evaluate_s, "evaluate_score": float(result.score), "compile_s": compile_s,
                      "demos": len(compiled.predictors()[0].demos)}))


if __name__ == "__main__":
    main()
