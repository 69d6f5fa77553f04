r"""Two-tower training under TorchRec ``DistributedModelParallel`` (table-wise sharding).

Run on this CPU machine with the gloo backend and two processes::

    python -m torch.distributed.run --standalone --nproc_per_node 2 \\
        -m recsys.retrieval.two_tower.distributed --dataset ml-100k --protocol random \\
        --out experiments/runs/two-tower-dmp

or without torchrun: ``python -m recsys.retrieval.two_tower.distributed --spawn 2 ...``.

What each process does: builds the same vocabularies and model from the same seed; the
embedding tables are sharded table-wise by TorchRec's planner (each table lives on one rank,
lookups travel by all-to-all) and updated by a fused optimiser applied in backward; the MLPs
are replicated and averaged by DDP. Every global batch is cut into equal per-rank slices; the
item embeddings of all slices are all-gathered (with gradient), so each user is scored against
the whole global batch exactly as in single-process training. After each epoch the shards are
gathered on rank 0, which computes validation NDCG@10 with the ordinary single-process
:class:`TwoTowerRetriever` and decides on early stopping; rank 0 saves the best model, a plain
retriever directory that :meth:`TwoTowerRetriever.load` reads.

Scaling: the same command runs on GPUs with ``--backend nccl --device cuda`` and one process
per GPU (``--nproc_per_node 8``); across machines use torchrun's rendezvous
(``--nnodes N --rdzv_backend c10d --rdzv_endpoint HOST:PORT``). With many GPUs the planner
may also choose row-wise or column-wise sharding for large tables (drop ``--table-wise``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.nn import functional as dist_nn

from recsys.retrieval.two_tower.retriever import TwoTowerConfig, TwoTowerRetriever
from recsys.retrieval.two_tower.runtime import torch_threads
from recsys.retrieval.two_tower.task import InBatchSoftmaxTask

log = logging.getLogger(__name__)


def _shard(
    model: torch.nn.Module, config: TwoTowerConfig, table_wise: bool, device: torch.device
) -> Any:
    """Wrap ``model`` in DMP with the config's table optimiser fused into backward."""
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.distributed.types import ShardingType
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

    if config.sparse_optimizer == "adam":
        opt_class: type[torch.optim.Optimizer] = torch.optim.Adam
        kwargs: dict[str, Any] = {"lr": config.learning_rate}
        if device.type == "cpu":
            raise ValueError(
                "sparse_optimizer='adam' has no fused CPU kernel in TorchRec/FBGEMM: "
                "use 'adagrad' or 'rowwise_adagrad' for distributed training on CPU"
            )
    elif config.sparse_optimizer == "adagrad":
        opt_class, kwargs = torch.optim.Adagrad, {"lr": config.sparse_learning_rate, "eps": 1e-8}
    else:
        opt_class, kwargs = RowWiseAdagrad, {"lr": config.sparse_learning_rate, "eps": 1e-8}
    tables = []
    for module in model.modules():
        if isinstance(module, EmbeddingBagCollection):
            apply_optimizer_in_backward(opt_class, module.parameters(), kwargs)
            tables += [cfg.name for cfg in module.embedding_bag_configs()]
    constraints = (
        {t: ParameterConstraints(sharding_types=[ShardingType.TABLE_WISE.value]) for t in tables}
        if table_wise
        else None
    )
    world = dist.get_world_size()
    topology = Topology(world_size=world, compute_device=device.type)
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    sharders = [EmbeddingBagCollectionSharder()]
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(module=model, device=device, plan=plan, sharders=sharders)
    return dmp, plan


def _optimizer(dmp: Any, lr: float, weight_decay: float) -> Any:
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(dmp.named_parameters())),
        lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay),
    )
    return CombinedOptimizer([dmp.fused_optimizer, dense])


def _gather(world: int, rank: int):
    def gather(emb: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        embs = dist_nn.all_gather(emb)
        all_ids = [torch.empty_like(ids) for _ in range(world)]
        dist.all_gather(all_ids, ids)
        return torch.cat(list(embs)), torch.cat(all_ids), rank * emb.shape[0]

    return gather


def full_state_dict(dmp: Any) -> dict[str, torch.Tensor] | None:
    """The unsharded state dict, assembled on rank 0 (``None`` on other ranks).

    Table-wise sharding keeps each table whole on one rank: every rank contributes the tables
    it holds, replicated dense weights come from rank 0.
    """
    local: dict[str, torch.Tensor] = {}
    for key, value in dmp.state_dict().items():
        shards = value.local_shards() if hasattr(value, "local_shards") else None
        if shards is None:
            if dist.get_rank() == 0:
                local[key] = value.detach().cpu().clone()
            continue
        for shard in shards:
            if tuple(shard.tensor.shape) == tuple(value.size()):
                local[key] = shard.tensor.detach().cpu().clone()
            else:  # not whole on this rank (row/column-wise): place it into a full tensor
                full = local.setdefault(key, torch.zeros(tuple(value.size())))
                off = shard.metadata.shard_offsets
                sizes = shard.metadata.shard_sizes
                full[off[0] : off[0] + sizes[0], off[1] : off[1] + sizes[1]] = shard.tensor
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    if dist.get_rank() != 0:
        return None
    merged: dict[str, torch.Tensor] = {}
    for part in parts:  # disjoint pieces: a sum assembles them
        for key, tensor in part.items():
            merged[key] = merged[key] + tensor if key in merged else tensor
    return merged


def train_distributed(
    split: Any,
    config: TwoTowerConfig,
    out: Path | None = None,
    table_wise: bool = True,
) -> dict[str, Any]:
    """Train on an initialised process group; rank 0 returns the report and saves the model."""
    if config.uniform_negatives:
        raise ValueError("uniform_negatives is not supported in distributed training")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(config.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    trainer = TwoTowerRetriever(config, device=str(device), progress=False).prepare(split)
    assert trainer.model is not None and trainer.features is not None
    dmp, plan = _shard(trainer.model, config, table_wise, device)
    optimizer = _optimizer(dmp, config.learning_rate, config.weight_decay)
    assert trainer._task is not None
    task = InBatchSoftmaxTask(
        dmp,
        trainer._task.item_log_prob,
        temperature=config.temperature,
        logq_correction=config.logq_correction,
        n_items=trainer.n_items,
        gather=_gather(world, rank),
    )
    evaluator = None
    if rank == 0:
        evaluator = TwoTowerRetriever(config, device="cpu", progress=False)
        evaluator.features, evaluator.n_items = trainer.features, trainer.n_items
        evaluator._split = split
        evaluator.model = evaluator.build_model(trainer.features)
    # the batch order must be identical on every rank; augmentation may differ per rank
    rng = np.random.default_rng(config.seed)
    aug_rng = np.random.default_rng(config.seed + 1 + rank)
    best, bad, best_state = -1.0, 0, None
    history: list[dict[str, float]] = []
    epoch_seconds: list[float] = []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        dmp.train()
        losses = []
        for rows in trainer.batches(rng):
            per_rank = len(rows) // world
            if per_rank < 1:
                continue
            local = rows[rank * per_rank : (rank + 1) * per_rank]
            user_kjt, item_kjt, item_ids, _, _ = trainer.encode_batch(local, aug_rng)
            loss = task(user_kjt, item_kjt, item_ids)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        epoch_seconds.append(time.perf_counter() - start)
        state = full_state_dict(dmp)
        stop = False
        if rank == 0:
            assert evaluator is not None and evaluator.model is not None and state is not None
            evaluator.model.load_state_dict(state)
            evaluator.refresh_embeddings()
            ndcg = evaluator.validate() if len(split.valid) else float("nan")
            history.append({"epoch": epoch, "loss": float(np.mean(losses)), "valid_ndcg@10": ndcg})
            log.warning(
                "rank0 epoch %d loss %.4f valid ndcg@10 %.4f (%.1fs)",
                epoch,
                np.mean(losses),
                ndcg,
                epoch_seconds[-1],
            )
            if ndcg > best or not len(split.valid):
                best, bad, best_state = ndcg, 0, state
                evaluator.best_epoch = epoch
            else:
                bad += 1
                stop = bad > config.patience and epoch >= config.min_epochs
        flag = [stop]
        dist.broadcast_object_list(flag, src=0)
        if flag[0]:
            break
    report: dict[str, Any] = {}
    if rank == 0:
        assert evaluator is not None and evaluator.model is not None and best_state is not None
        evaluator.model.load_state_dict(best_state)
        evaluator.refresh_embeddings()
        evaluator.history, evaluator.epoch_seconds = history, epoch_seconds
        report = {
            "world_size": world,
            "backend": dist.get_backend(),
            "sharding": {
                path: {
                    name: {"type": str(p.sharding_type), "ranks": p.ranks}
                    for name, p in params.items()
                }
                for path, params in plan.plan.items()
            },
            "history": history,
            "epoch_seconds": epoch_seconds,
            "seconds_per_epoch": float(np.mean(epoch_seconds)),
            "best_epoch": evaluator.best_epoch,
            "best_valid_ndcg@10": best,
        }
        if out is not None:
            evaluator.save(out)
            (Path(out) / "distributed.json").write_text(json.dumps(report, indent=2))
        report["retriever"] = evaluator
    return report


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--protocol", default="random")
    p.add_argument("--seed", type=int, default=2020, help="split seed")
    p.add_argument("--config", default=None, help="TwoTowerConfig as JSON text or a .json file")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--out", default=None, help="where rank 0 saves the trained retriever")
    p.add_argument("--backend", default="gloo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-table-wise", action="store_true", help="let the planner choose")
    p.add_argument("--spawn", type=int, default=0, help="spawn N local processes (no torchrun)")
    return p.parse_args(argv)


def _config(args: argparse.Namespace) -> TwoTowerConfig:
    raw: dict[str, Any] = {}
    if args.config:
        text = Path(args.config).read_text() if args.config.endswith(".json") else args.config
        raw = json.loads(text)
    if args.epochs is not None:
        raw["epochs"] = args.epochs
    raw["device"] = args.device
    raw["progress"] = False
    if args.device == "cpu" and raw.get("sparse_optimizer", "adam") == "adam":
        log.warning("CPU: tables use sparse_optimizer='adagrad' (no fused CPU Adam)")
        raw["sparse_optimizer"] = "adagrad"
    return TwoTowerConfig.model_validate(raw)


def _run(args: argparse.Namespace) -> None:
    from recsys.data import load_dataset, make_split

    dist.init_process_group(backend=args.backend)
    try:
        config = _config(args)
        with torch_threads(config.num_threads):
            split = make_split(load_dataset(args.dataset), args.protocol, seed=args.seed)
            report = train_distributed(
                split, config, Path(args.out) if args.out else None, not args.no_table_wise
            )
        if dist.get_rank() == 0:
            report.pop("retriever", None)
            print(json.dumps(report, indent=2, default=str), flush=True)
    finally:
        # every rank waits for the others before tearing gloo down: a rank that destroyed
        # the group while rank 0 was still saving aborted in gloo's teardown ("terminate
        # called without an active exception"), about one run in four
        dist.barrier()
        dist.destroy_process_group()


def _spawned(rank: int, world: int, port: int, argv: list[str]) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    _run(_parse(argv))


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``torchrun ... -m recsys.retrieval.two_tower.distributed``."""
    args = _parse(argv)
    if args.spawn:
        import socket

        import torch.multiprocessing as mp

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        rest = [a for a in (argv if argv is not None else __import__("sys").argv[1:])]
        i = rest.index("--spawn")
        rest = rest[:i] + rest[i + 2 :]
        mp.spawn(_spawned, args=(args.spawn, port, rest), nprocs=args.spawn, join=True)
        return
    _run(args)


if __name__ == "__main__":
    main()
