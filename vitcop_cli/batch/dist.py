"""The ranks of a batch under torchrun: who is who, agreeing on each step, shared progress counters.

Contract:

- :func:`from_env` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` / ``MASTER_PORT``); with no ``WORLD_SIZE`` or a world of
  one it returns ``None`` (a plain single-process batch). Otherwise it joins the job through
  ``torch.distributed``'s ``env://`` rendezvous and a gloo process group (control messages only:
  small objects on CPU, whatever device the model uses; its store keys carry the run attempt,
  ``TORCHELASTIC_RESTART_COUNT``, because torchrun's store outlives a ``--max-restarts`` restart and
  the dead group's keys would hang the new one), every collective bounded by ``timeout``
  (``VITCOP_DIST_TIMEOUT`` seconds, default 1800), so a rank that never answers ends the job with
  an error instead of a hang.
- :meth:`DistContext.agree` runs one step (take the lock, load the model, ...) on this rank and
  gathers every rank's outcome: if any rank failed, every rank raises the same one-line error,
  ``rank R on HOST: <message>`` (exit status of that error: 2 for input errors, else 1), marked
  ``reported_by_root`` so only rank 0 prints it. It is also the barrier between steps.
- Counters and messages (progress across ranks) live in the job's c10d store under a prefix
  unique to this run attempt (``TORCHELASTIC_RESTART_COUNT``): :meth:`add` / :meth:`count`,
  :meth:`post` / :meth:`messages` (rank 0 prints other ranks' failure lines), :meth:`finish` /
  :meth:`finished` (rank 0 waits for every rank's share before merging; a rank killed meanwhile
  makes torchrun stop the whole group).
- :func:`wait_for_ranks` is that wait: it returns once every rank has called :meth:`finish`, and
  raises :class:`RuntimeFailure` (exit 1) when neither the ``done`` counter (jobs written, all ranks)
  nor the ``finished`` count has changed for ``timeout_s`` seconds (a rank alive but hung, which
  torchrun does not stop); any rank's progress restarts that clock. The message names how many
  ranks have not finished and for how long nothing moved, and says the part files written so far
  stay for the next run to resume from.
- :func:`threads_per_rank`: CPU cores available / ranks on this node (at least 1).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from ..errors import InputError, RuntimeFailure, VitcopError

__all__ = ["DistContext", "from_env", "threads_per_rank", "under_torchrun", "wait_for_ranks"]

DEFAULT_TIMEOUT_S = 1800.0

# the clock and the pause of wait_for_ranks, module attributes so tests can drive time without waiting
_clock = time.monotonic
_sleep = time.sleep


def under_torchrun() -> bool:
    """Whether this process is a rank started by torchrun (or another env:// launcher)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def threads_per_rank(local_world: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world))


def _timeout_s() -> float:
    raw = os.environ.get("VITCOP_DIST_TIMEOUT")
    if raw is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InputError(f"VITCOP_DIST_TIMEOUT={raw!r}: give a positive number of seconds")
    return value


@dataclass
class DistContext:
    rank: int
    world: int
    local_rank: int
    local_world: int
    host: str
    timeout_s: float
    _store: Any = None

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    # ---- steps ---------------------------------------------------------------------------
    def agree(self, step: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` on this rank, then every rank's outcome gathered; any failure fails every rank alike."""
        import torch.distributed as dist

        result, status = None, None
        try:
            result = fn()
        except VitcopError as exc:
            status = (exc.exit_code, str(exc))
        except Exception as exc:  # noqa: BLE001 - reported as this rank's failure
            text = " ".join(str(exc).split())
            status = (1, f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
        gathered: list = [None] * self.world
        try:
            dist.all_gather_object(gathered, (self.host, status))
        except Exception as exc:  # noqa: BLE001 - a rank that never answered
            raise _shared(RuntimeFailure(
                f"rank {self.rank} on {self.host}: not every rank answered within {self.timeout_s:.0f} s while "
                f"{step} ({' '.join(str(exc).split())[:200]}); set VITCOP_DIST_TIMEOUT to wait longer"
            )) from None
        failed = [(r, host, st) for r, (host, st) in enumerate(gathered) if st is not None]
        if failed:
            r, host, (code, msg) = failed[0]
            others = f" (and {len(failed) - 1} more rank{'s' if len(failed) > 2 else ''})" if len(failed) > 1 else ""
            text = f"rank {r} on {host}{others}: {step} failed: {msg}"
            raise _shared(InputError(text) if code == 2 else RuntimeFailure(text))
        return result

    # ---- counters and messages in the job's store ------------------------------------------
    def add(self, name: str, n: int = 1) -> int:
        return int(self._store.add(name, n))

    def count(self, name: str) -> int:
        return int(self._store.add(name, 0))

    def post(self, payload: dict) -> None:
        n = self.add("msg/n")
        self._store.set(f"msg/{n}", json.dumps(payload))

    def messages(self, seen: int) -> tuple[list[dict], int]:
        """Messages posted after the first ``seen`` ones, and the new ``seen``."""
        n = self.count("msg/n")
        out = []
        for i in range(seen + 1, n + 1):
            try:
                out.append(json.loads(self._store.get(f"msg/{i}")))
            except Exception:  # noqa: BLE001 - a message being written: read it next time
                return out, i - 1
        return out, n

    def finish(self) -> None:
        self.add("finished")

    def finished(self) -> int:
        return self.count("finished")

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass


def wait_for_ranks(ctx: DistContext, tick: Callable[[], None], *, poll_s: float, where: str) -> None:
    """Rank 0's wait for every rank's :meth:`~DistContext.finish`, calling ``tick()`` every ``poll_s`` seconds.

    Raises :class:`RuntimeFailure` once the shared progress (``done`` count, ``finished`` count) has
    not changed for ``ctx.timeout_s`` seconds; ``where`` names the output whose part files stay.
    """
    last, since = None, _clock()
    while True:
        finished = ctx.finished()
        if finished >= ctx.world:
            return
        state = (ctx.count("done"), finished)
        now = _clock()
        if state != last:
            last, since = state, now
        elif now - since >= ctx.timeout_s:
            missing = ctx.world - finished
            raise RuntimeFailure(
                f"rank {ctx.rank} on {ctx.host}: {missing} of {ctx.world} ranks "
                f"{'has' if missing == 1 else 'have'} not finished and no rank made progress for "
                f"{now - since:.0f} s ({state[0]} job{'s' if state[0] != 1 else ''} done in all): a rank is hung; "
                f"the results already written stay in the part files next to {where} and the next run resumes "
                "from them; set VITCOP_DIST_TIMEOUT to wait longer"
            )
        tick()
        _sleep(poll_s)


def _shared(exc: VitcopError) -> VitcopError:
    exc.reported_by_root = True
    return exc


def from_env() -> DistContext | None:
    """The job this process is a rank of, joined; ``None`` outside torchrun or for a world of one."""
    if not under_torchrun():
        return None
    try:
        world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise InputError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") from None
    if world <= 1:
        return None
    import torch.distributed as dist

    timeout_s = _timeout_s()
    timeout = timedelta(seconds=timeout_s)
    host = socket.gethostname()
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    try:
        store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
        store.set_timeout(timeout)
        # torchrun's agent store outlives a restart (--max-restarts): without a per-attempt prefix the
        # restarted group's gloo handshake reads the dead group's addresses and hangs
        pg_store = dist.PrefixStore(f"vitcop-batch/{run_id}/{attempt}/pg/", store)
        dist.init_process_group("gloo", store=pg_store, rank=rank, world_size=world, timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeFailure(
            f"rank {rank} on {host}: cannot join the torch.distributed job: {' '.join(str(exc).split())[:300]}"
        ) from None
    prefixed = dist.PrefixStore(f"vitcop-batch/{run_id}/{attempt}/", store)
    return DistContext(rank, world, local_rank, local_world, host, timeout_s, prefixed)
