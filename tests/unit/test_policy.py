"""The scheduling policy on resource vectors, without processes."""

from __future__ import annotations

from jobkit.scheduler.machine import parse_nvidia_smi
from jobkit.scheduler.policy import Capacity, Ledger, Request, never_fits, plan

GiB = 2**30


def ids(allocs: list) -> list[str]:  # type: ignore[type-arg]
    return [a.job_id for a in allocs]


def test_admission_by_fit_on_every_resource() -> None:
    ledger = Ledger(Capacity(cpus=4, mem=8 * GiB))
    queue = [
        Request("a", cpus=2, mem=4 * GiB, created_at=1),
        Request("b", cpus=2, mem=5 * GiB, created_at=2),  # memory does not fit next to a
        Request("c", cpus=2, mem=1 * GiB, created_at=3),
    ]
    started = plan(queue, ledger)
    # b is the head of the line once a runs: its vector is reserved, so c may not jump it.
    assert ids(started) == ["a"]
    ledger.release("a")
    assert ids(plan(queue[1:], ledger)) == ["b", "c"]


def test_priority_bands_then_fifo() -> None:
    ledger = Ledger(Capacity(cpus=1, mem=GiB, max_jobs=3))
    queue = [
        Request("low", priority=-100, created_at=1, cpus=0.1),
        Request("n1", priority=0, created_at=2, cpus=0.1),
        Request("high", priority=100, created_at=3, cpus=0.1),
        Request("n2", priority=0, created_at=4, cpus=0.1),
    ]
    assert ids(plan(queue, ledger)) == ["high", "n1", "n2"]  # the cap stops 'low'


def test_dominant_resource_fairness_between_owners() -> None:
    cap = Capacity(cpus=8, mem=8 * GiB)
    ledger = Ledger(cap)
    # alice already holds 4 cpus (dominant share 0.5); bob holds 1 GiB (0.125).
    ledger.allocate(plan([Request("running-a", owner="alice", cpus=4)], ledger)[0])
    ledger.allocate(plan([Request("running-b", owner="bob", cpus=0.5, mem=GiB)], ledger)[0])
    queue = [Request(f"a{i}", owner="alice", cpus=1, created_at=i) for i in range(3)]
    queue += [Request(f"b{i}", owner="bob", cpus=1, created_at=10 + i) for i in range(3)]
    started = ids(plan(queue, ledger))
    assert started[:3] == ["b0", "b1", "b2"]  # bob catches up before alice's older jobs


def test_whole_gpus_are_disjoint_and_gang_allocated() -> None:
    ledger = Ledger(Capacity(cpus=16, mem=64 * GiB, gpus=("0", "1", "2", "3")))
    queue = [Request(f"j{i}", gpus=2, created_at=i) for i in range(3)]
    first = plan(queue, ledger)
    assert ids(first) == ["j0", "j1"]
    assert first[0].gpu_ids == ["0", "1"] and first[1].gpu_ids == ["2", "3"]
    ledger.release("j0")
    again = plan(queue[2:], ledger)
    assert again[0].gpu_ids == ["0", "1"]


def test_fractional_gpus_pack_onto_one_device() -> None:
    ledger = Ledger(Capacity(cpus=16, mem=64 * GiB, gpus=("0", "1")))
    started = plan([Request(f"h{i}", gpus=0.5, created_at=i) for i in range(3)], ledger)
    assert [a.gpu_ids for a in started] == [["0"], ["0"], ["1"]]


def test_gpu_type_filters_devices() -> None:
    cap = Capacity(
        cpus=8, mem=GiB, gpus=("0", "1"), gpu_names=("NVIDIA A100-SXM4-80GB", "NVIDIA H100")
    )
    started = plan([Request("x", gpus=1, gpu_type="h100")], Ledger(cap))
    assert started[0].gpu_ids == ["1"]
    assert "type 'v100'" in (never_fits(Request("y", gpus=1, gpu_type="v100"), cap) or "")


def test_never_fits_names_the_resource() -> None:
    cap = Capacity(cpus=2, mem=GiB, gpus=("0",))
    assert "3 cpus" in (never_fits(Request("a", cpus=3), cap) or "")
    assert "memory" in (never_fits(Request("a", mem=2 * GiB), cap) or "")
    assert "2 GPUs" in (never_fits(Request("a", gpus=2), cap) or "")
    assert never_fits(Request("a", cpus=2, mem=GiB, gpus=1), cap) is None


def test_nvidia_smi_output_is_parsed() -> None:
    recorded = "0, NVIDIA H100 80GB HBM3\n1, NVIDIA H100 80GB HBM3\n"
    assert parse_nvidia_smi(recorded) == [
        ("0", "NVIDIA H100 80GB HBM3"),
        ("1", "NVIDIA H100 80GB HBM3"),
    ]
    assert parse_nvidia_smi("No devices were found\n") == []
