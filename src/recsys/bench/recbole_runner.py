"""Run one RecBole sequential model on exported prediction events; write its top lists.

Executed by the Python of a separate RecBole environment (it imports nothing of recsys):

    /tmp/recbole-venv/bin/python recbole_runner.py --data-dir D --name N --model SASRec
        --epochs 20 --out lists.npz

``D/N/N.{train,valid,test}.inter`` are RecBole benchmark files written by
:func:`recsys.bench.recbole_peers.export_events`: one row per prediction event (the prefix as
``item_id_list``, the next item as ``item_id``, the event's index as ``timestamp``). The model
trains on the train rows for a fixed number of epochs (no validation: epochs are chosen on the
validation stage), then scores every test row over the whole catalogue
(``full_sort_predict``); the top ``--topk`` items and scores of each row are written, in the
rows' order, for recsys' own evaluator. ``--mask-history`` masks the prefix's items (the
MovieLens next-event protocol); the session protocol keeps them.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    """Parse arguments, train, score the test rows, write the lists and timings."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--model", default="SASRec")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--topk", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--mask-history", action="store_true")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    torch.set_num_threads(args.threads)
    config_dict = {
        "data_path": args.data_dir,
        "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id_list", "item_id", "timestamp"]},
        "alias_of_item_id": ["item_id_list"],
        "normalize_all": False,
        "normalize_field": None,
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "epochs": args.epochs,
        "eval_step": 0,
        "train_batch_size": args.batch_size,
        "eval_batch_size": 512,
        "learning_rate": args.lr,
        "hidden_size": args.hidden,
        "embedding_size": args.hidden,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "seed": args.seed,
        "reproducibility": True,
        "device": "cpu",
        "use_gpu": False,
        "show_progress": False,
        "log_wandb": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "checkpoint_dir": f"{args.data_dir}/saved",
    }
    if args.model == "SASRec":
        config_dict.update(
            {
                "n_layers": 2,
                "n_heads": 2,
                "inner_size": 2 * args.hidden,
                "hidden_dropout_prob": 0.2,
                "attn_dropout_prob": 0.2,
            }
        )
    config = Config(model=args.model, dataset=args.name, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, _valid, test_data = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data.dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    epoch_seconds, losses = [], []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        epoch_seconds.append(time.perf_counter() - start)
        losses.append(float(loss if not isinstance(loss, tuple) else sum(loss)))
        print(f"epoch {epoch + 1} loss {losses[-1]:.4f} {epoch_seconds[-1]:.1f}s", flush=True)

    model.eval()
    test = test_data.dataset.inter_feat
    seq_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
    n_rows = len(test)
    items_out = np.zeros((n_rows, args.topk), dtype=np.int64)
    scores_out = np.zeros((n_rows, args.topk), dtype=np.float32)
    order = np.zeros(n_rows, dtype=np.int64)
    tokens = np.asarray(dataset.field2id_token[config["ITEM_ID_FIELD"]])
    as_int = np.asarray([int(t) if t != "[PAD]" else -1 for t in tokens], dtype=np.int64)
    start = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, n_rows, 512):
            batch = test[lo : lo + 512]
            scores = model.full_sort_predict(batch.to(config["device"]))
            scores = scores.view(len(batch), -1)
            scores[:, 0] = -np.inf  # padding id
            if args.mask_history:
                seq = batch[seq_field]
                scores.scatter_(1, seq, -np.inf)
                scores[:, 0] = -np.inf
            top_scores, top_ids = torch.topk(scores, args.topk, dim=1)
            items_out[lo : lo + len(batch)] = as_int[top_ids.numpy()]
            scores_out[lo : lo + len(batch)] = top_scores.numpy()
            order[lo : lo + len(batch)] = batch["timestamp"].numpy().astype(np.int64)
    predict_seconds = time.perf_counter() - start
    np.savez(args.out, items=items_out, scores=scores_out, event=order)
    import recbole

    meta = {
        "model": args.model,
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        "epochs": args.epochs,
        "epoch_seconds": epoch_seconds,
        "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else float("nan"),
        "losses": losses,
        "train_rows": len(train_data.dataset),
        "test_rows": n_rows,
        "predict_seconds": predict_seconds,
        "threads": args.threads,
        "config": {k: config[k] for k in ("hidden_size", "learning_rate", "MAX_ITEM_LIST_LENGTH")},
    }
    with open(args.out + ".json", "w") as handle:
        json.dump(meta, handle, indent=2)


if __name__ == "__main__":
    main()
