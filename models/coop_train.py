#!/usr/bin/env python3
"""Train a CoOp context (Zhou et al., "Learning to Prompt for Vision-Language Models") for an
exported tipedge CLIP folder, following the official recipe; writes a tipedge-coop/1 context file.

The recipe is the official one (KaiyangZhou/CoOp `trainers/coop.py`, `configs/trainers/CoOp/*.yaml`
on top of the Dassl.pytorch defaults), re-implemented here, not copied:

  model       the open_clip model the folder was exported from (export_clip.build_model), in eval
              mode, image and text encoders frozen; only the context vectors are trained.
              Refuses to train if the PyTorch text tower does not reproduce DIR/text_embed.onnx
              (onnxruntime) within 1e-4 on the initial prompts, or the image tower DIR/image.onnx.
  prompts     SOS + M context vectors + class-name tokens + "." + EOT (models/coop.py), class tokens
              at the end / middle / front; generic context [M, D] or class-specific (--csc) [N, M, D];
              init N(0, 0.02^2) or the token embeddings of --ctx-init words (then M = word count and,
              as in the official code, the context is generic even with --csc).
  loss        cross entropy of exp(logit_scale) * normalised image features @ normalised W^T.
  optimiser   SGD lr 0.002, momentum 0.9, weight decay 5e-4 (dampening 0, no Nesterov).
  schedule    stepped once per epoch after its last batch: epoch 0 at the constant warm-up lr 1e-5,
              then torch's CosineAnnealingLR(T_max = max_epoch) from 0.002 (Dassl's
              ConstantWarmupScheduler, WARMUP_RECOUNT=True): the 0-based epoch e >= 1 trains at
              lr/2 * (1 + cos(pi * (e - 1) / max_epoch)), so the last epoch stays above 0.
  epochs      by shots per class: 50 for 1 shot, 100 for 2-4, 200 for more (--epochs overrides).
  data        batch 32 from a RandomSampler, drop_last when the set has >= 32 images (Dassl's rule);
              RandomResizedCrop(crop_size, scale (0.08, 1), bicubic) + RandomHorizontalFlip +
              Normalize(image.json mean/std); fp32.
  seeds       --seed-train seeds python `random`, numpy and torch (as Dassl's set_random_seed) after
              the model is built: the --num-shots subset, the context init, the sampler and the
              augmentation all come from it. Runs single-process (no DataLoader workers).

Examples:
  python models/coop_train.py --model models/fixtures/clip-tiny --fixture --seed 0 \\
      --shots examples/textile/shots --val examples/textile/val --epochs 30 --out ctx.safetensors
  python models/coop_train.py --model out/vit-b-32 --shots data/shots --num-shots 4 --csc \\
      --position middle --out ctx.safetensors --log-json log.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
import coop  # noqa: E402

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")

# The official recipe (CoOp configs + Dassl defaults)
LR, MOMENTUM, WEIGHT_DECAY = 0.002, 0.9, 5e-4
WARMUP_EPOCH, WARMUP_CONS_LR = 1, 1e-5
BATCH_SIZE = 32
RRCROP_SCALE = (0.08, 1.0)
TEST_BATCH = 100
PARITY_TOL = 1e-4


class UsageError(Exception):
    """A one-line user-facing error (exit code 2)."""


# ----------------------------------------------------------------------------------------------
# recipe pieces (also used by make_coop_train_refs.py)


def default_epochs(shots: int) -> int:
    """CoOp's configs by shots: *_ep50 for 1 shot, *_ep100 for 2 and 4, the 200-epoch configs for
    8 and 16 (CoOp's COOP.md); counts in between go to the next larger setting."""
    if shots <= 1:
        return 50
    if shots <= 4:
        return 100
    return 200


def set_seeds(seed: int) -> None:
    """Dassl's set_random_seed: python random, numpy, torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(params, lr: float = LR):
    import torch

    return torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                           dampening=0, nesterov=False)


class ConstantWarmupCosine:
    """The LR schedule Dassl builds for CoOp (`build_lr_scheduler` with LR_SCHEDULER "cosine",
    WARMUP_EPOCH 1, WARMUP_TYPE "constant", WARMUP_RECOUNT True), written anew: torch's
    CosineAnnealingLR(T_max=max_epoch) is the successor; the wrapper sets the constant lr at
    construction and, while its own epoch counter is below the warm-up length, counts up (handing
    over the successor's last lr once the warm-up is over); afterwards it steps the successor.
    With recount=False the successor's counter starts at warmup_epoch (Dassl's other branch).
    `step()` is called once per epoch, after the epoch's last optimiser step."""

    def __init__(self, optimizer, max_epoch: int, warmup_epoch: int = WARMUP_EPOCH,
                 cons_lr: float = WARMUP_CONS_LR, recount: bool = True):
        import torch

        self.optimizer = optimizer
        self.successor = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(max_epoch))
        self.warmup_epoch = warmup_epoch
        self.cons_lr = cons_lr
        if warmup_epoch > 0 and not recount:
            self.successor.last_epoch = warmup_epoch
        self.last_epoch = 0
        if warmup_epoch > 0:
            self._set(self.cons_lr)

    def _set(self, lr: float) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def step(self) -> None:
        if self.warmup_epoch <= 0 or self.last_epoch >= self.warmup_epoch:
            self.successor.step()
            return
        self.last_epoch += 1
        if self.last_epoch >= self.warmup_epoch:
            self._set(self.successor.get_last_lr()[0])
        else:
            self._set(self.cons_lr)

    def get_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def logits_of(learner, model, feats, logit_scale):
    """exp(logit_scale) * f @ W^T with f the L2-normalised image features [B, E] and W the
    L2-normalised text features of the prompts [N, E] (CoOp's CustomCLIP.forward)."""
    w = learner.weights(model)
    return logit_scale * feats @ w.t()


def train_step(learner, model, optimizer, feats, labels, logit_scale):
    """One CoOp step on a batch of L2-normalised image features: forward, cross entropy, zero_grad,
    backward, optimizer.step (Dassl's model_backward_and_update). Returns (loss, logits)."""
    import torch.nn.functional as F

    logits = logits_of(learner, model, feats, logit_scale)
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.item()), logits.detach()


# ----------------------------------------------------------------------------------------------
# data


def list_class_folders(root: str, what: str):
    if not os.path.isdir(root):
        raise UsageError(f"{what} folder {root} does not exist")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                     and not d.startswith("."))
    if not classes:
        raise UsageError(f"{what} folder {root} has no class sub-folders")
    out = []
    for c in classes:
        d = os.path.join(root, c)
        files = sorted(f for f in os.listdir(d) if f.lower().endswith(IMAGE_EXTS)
                       and os.path.isfile(os.path.join(d, f)))
        if not files:
            raise UsageError(f"class folder {d} has no images ({', '.join(IMAGE_EXTS)})")
        out.append((c, [os.path.join(d, f) for f in files]))
    return out


def load_image(path: str):
    try:
        im = common.load_rgb(path)
        im.load()
        return im
    except Exception as e:  # noqa: BLE001 - any decoder failure is reported with the file name
        raise UsageError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


def train_transform(pre: dict):
    from torchvision import transforms as T

    interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[
        pre["interpolation"]]
    size = int(pre["crop_size"])
    return T.Compose([
        T.RandomResizedCrop((size, size), scale=RRCROP_SCALE, interpolation=interp),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(pre["mean"], pre["std"]),
    ])


def eval_tensor(im, pre: dict):
    """common.preprocess on an already decoded image (Resize shortest, CenterCrop, Normalize)."""
    import torch
    from torchvision import transforms as T

    interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}[
        pre["interpolation"]]
    tf = T.Compose([T.Resize(pre["resize"], interpolation=interp), T.CenterCrop(pre["crop_size"]),
                    T.ToTensor(), T.Normalize(pre["mean"], pre["std"])])
    with torch.no_grad():
        return tf(im)


def encode(model, x):
    import torch

    with torch.no_grad():
        f = model.encode_image(x).float()
    return f / f.norm(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------------------------
# checks


def read_sidecars(model_dir: str):
    if not os.path.isdir(model_dir):
        raise UsageError(f"model folder {model_dir} does not exist")
    out = {}
    for name in ("text_embed", "image"):
        p = os.path.join(model_dir, name + ".json")
        if not os.path.isfile(p):
            raise UsageError(f"{p} is missing (export the folder with export_clip.py --towers "
                             f"image,text,text_embed)")
        try:
            with open(p) as f:
                out[name] = json.load(f)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read {p}: {e}") from None
        g = os.path.join(model_dir, out[name].get("graph", name + ".onnx"))
        if not os.path.isfile(g):
            raise UsageError(f"{g} is missing")
    te = out["text_embed"]
    g = os.path.join(model_dir, te.get("graph", "text_embed.onnx"))
    if common.sha256_file(g) != te.get("sha256"):
        raise UsageError(f"{g} does not match the sha256 recorded in text_embed.json")
    return out["text_embed"], out["image"]


def check_towers(model, learner, model_dir, side_text, side_image, probe_image):
    """Refuses (UsageError) unless the PyTorch model reproduces the exported folder: the token
    table (DIR/token_embedding.safetensors, equal), the prompt
    embeddings of (up to) two classes through TextEncoder vs DIR/text_embed.onnx (raw features,
    max abs diff <= 1e-4), and one image through encode_image vs DIR/image.onnx (L2-normalised
    features, max abs diff <= 1e-4). Also the logit scale vs the sidecar."""
    import torch
    from safetensors.numpy import load_file

    tt = side_text.get("token_table") or {"file": "token_embedding.safetensors", "tensor": "token_embedding"}
    tpath = os.path.join(model_dir, tt["file"])
    try:
        table = load_file(tpath)[tt["tensor"]].astype(np.float32)
    except Exception as e:  # noqa: BLE001
        raise UsageError(f"cannot read the token table {tpath}: {e}") from None
    mine = model.token_embedding.weight.detach().float().numpy()
    if table.shape != mine.shape:
        raise UsageError(f"{tpath} is {table.shape}, the model's token embedding {mine.shape}")
    d_tok = float(np.abs(table - mine).max())
    if not d_tok <= 1e-7:  # written from the same weights (f16 only when lossless): equal
        raise UsageError(f"the model's token embedding differs from {tpath} (max abs diff {d_tok:.3e}): "
                         f"give the --seed/--fixture the folder was exported with")
    with torch.no_grad():
        k = min(2, learner.n_cls)
        emb = learner.prompts()[:k].detach().float()
        eot = learner.eot[:k]
        ref = coop.TextEncoder(model)(emb, eot).float().numpy()
    sess = common.ort_session(os.path.join(model_dir, side_text.get("graph", "text_embed.onnx")), 2)
    out = sess.run(None, {"embeddings": emb.numpy(), "eot": eot.numpy().astype(np.int64)})[0]
    d_text = float(np.abs(out - ref).max())
    if not d_text <= PARITY_TOL:
        raise UsageError(
            f"the PyTorch text tower ({side_text['arch']}, pretrained {side_text['pretrained']}) does "
            f"not reproduce {model_dir}/text_embed.onnx (max abs diff {d_text:.3e} > {PARITY_TOL}): "
            f"give the --seed/--fixture the folder was exported with")
    x = probe_image.unsqueeze(0)
    ref = encode(model, x).numpy()
    sess = common.ort_session(os.path.join(model_dir, side_image.get("graph", "image.onnx")), 2)
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    out = out / np.linalg.norm(out, axis=-1, keepdims=True)
    d_img = float(np.abs(out - ref).max())
    if not d_img <= PARITY_TOL:
        raise UsageError(f"the PyTorch image tower does not reproduce {model_dir}/image.onnx "
                         f"(normalised features, max abs diff {d_img:.3e} > {PARITY_TOL})")
    scale = float(model.logit_scale.exp().item())
    if abs(scale - float(side_image["logit_scale"])) > 1e-4 * max(1.0, scale):
        raise UsageError(f"model logit scale {scale} differs from image.json's {side_image['logit_scale']}")
    return {"token_table_max_abs": d_tok, "text_max_abs": d_text, "image_max_abs_normalised": d_img,
            "logit_scale": scale}


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, metavar="DIR",
                    help="exported model folder (image.onnx/json, text_embed.onnx/json); arch and "
                         "pretrained are read from text_embed.json")
    ap.add_argument("--seed", type=int, default=0,
                    help="the torch seed the folder was exported with (random-weight models; default 0)")
    ap.add_argument("--fixture", action="store_true",
                    help="the folder was exported with export_clip.py --fixture (fp16-rounded weights)")
    ap.add_argument("--shots", required=True, metavar="DIR",
                    help="training images, one sub-folder per class (class names = sorted folder "
                         "names, '_' -> ' ')")
    ap.add_argument("--num-shots", type=int, default=None, metavar="K",
                    help="use a random K images per class (python random seeded by --seed-train, "
                         "Dassl's generate_fewshot_dataset: all images of a class with fewer); "
                         "default: every image")
    ap.add_argument("--val", metavar="DIR", default=None,
                    help="validation images (same class folders): top-1 after every epoch, eval "
                         "pipeline (resize, center crop)")
    ap.add_argument("--n-ctx", type=int, default=16, help="number of context vectors M (default 16)")
    ap.add_argument("--ctx-init", default="",
                    help='initialise the context from these words, e.g. "a photo of a" (M = word '
                         "count; generic context even with --csc, as the official code); default "
                         "random N(0, 0.02^2)")
    ap.add_argument("--csc", action="store_true", help="class-specific context [N, M, D]")
    ap.add_argument("--position", choices=coop.POSITIONS, default="end",
                    help="where the class-name tokens go (default end)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="max epochs (default by shots per class: 50 for 1, 100 for 2-4, 200 for more)")
    ap.add_argument("--lr", type=float, default=LR, help=f"peak learning rate (default {LR})")
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"default {BATCH_SIZE}")
    ap.add_argument("--seed-train", type=int, default=0,
                    help="seed of everything random in training (default 0)")
    ap.add_argument("--feature-passes", type=int, default=0, metavar="E",
                    help="speed-up (default off): encode E augmented passes over the shots once, "
                         "before training, and let epoch e use the features of pass (e mod E), as "
                         "Tip-Adapter's cache does. Sampler, batches, schedule, loss and optimiser "
                         "are unchanged, but each image is only ever seen in E distinct random views "
                         "instead of a fresh view every epoch, so with E < epochs this is NOT the "
                         "official loop (the views repeat); with E >= epochs the views are "
                         "distributed as in the official loop but the random stream differs, so "
                         "results are not bit-identical to the default mode")
    ap.add_argument("--threads", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                    help="torch intra-op threads")
    ap.add_argument("--log-json", metavar="FILE", default=None, help="write the recipe and per-epoch log")
    ap.add_argument("--out", required=True, metavar="FILE", help="output context file (.safetensors)")
    args = ap.parse_args(argv)
    if args.n_ctx < 1:
        ap.error("--n-ctx must be >= 1")
    if args.num_shots is not None and args.num_shots < 1:
        ap.error("--num-shots must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        ap.error("--epochs must be >= 1")
    if args.batch_size < 1:
        ap.error("--batch-size must be >= 1")
    if args.feature_passes < 0:
        ap.error("--feature-passes must be >= 0")
    return args


def run(args):
    import open_clip
    import torch

    torch.set_num_threads(args.threads)
    side_text, side_image = read_sidecars(args.model)
    pre = side_image["preprocess"]
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"output folder {out_dir} does not exist")

    # data (listed before the model is built: errors come first)
    train_dirs = list_class_folders(args.shots, "--shots")
    folder_names = [c for c, _ in train_dirs]
    classnames = coop.class_names(folder_names)
    val_dirs = list_class_folders(args.val, "--val") if args.val else []
    for c, _ in val_dirs:
        if c not in folder_names:
            raise UsageError(f"--val class folder {c!r} is not a --shots class ({', '.join(folder_names)})")

    from export_clip import build_model

    t0 = time.time()
    print(f"building {side_text['arch']} (pretrained={side_text['pretrained']}, seed={args.seed}, "
          f"fixture={args.fixture})")
    model, arch, _ = build_model(side_text["arch"], side_text["pretrained"], args.seed, args.fixture)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(arch)
    crop = int(pre["crop_size"])
    vis_size = getattr(model.visual, "image_size", None)
    if vis_size is not None:
        vs = vis_size[0] if isinstance(vis_size, (tuple, list)) else vis_size
        if int(vs) != crop:
            raise UsageError(f"image.json crop_size {crop} != the model's input size {vs}")

    # everything random from here on (Dassl: set_random_seed before the dataset and the model)
    set_seeds(args.seed_train)
    train = []  # (path, label)
    for label, (c, files) in enumerate(train_dirs):
        if args.num_shots is not None and len(files) >= args.num_shots:
            files = random.sample(files, args.num_shots)
        elif args.num_shots is not None:
            print(f"  note: class {c!r} has {len(files)} < {args.num_shots} images: using all of them")
        train += [(f, label) for f in files]
    per_class = [sum(1 for _, l in train if l == i) for i in range(len(classnames))]
    shots = min(per_class)
    max_epoch = args.epochs or default_epochs(shots)

    csc = args.csc
    if args.ctx_init and args.csc:
        print("  note: with --ctx-init the official PromptLearner builds a generic context (CSC "
              "applies to random init only): training a generic context")
        csc = False
    if args.ctx_init:
        words = args.ctx_init.replace("_", " ").split(" ")
        n_tok = len(tokenizer.encode(args.ctx_init.replace("_", " ")))
        if n_tok != len(words):
            print(f"  warning: --ctx-init has {len(words)} words but {n_tok} BPE tokens; the "
                  f"official code assumes one token per word (kept as is)")
    learner = coop.PromptLearner(model, tokenizer, folder_names, n_ctx=args.n_ctx,
                                 ctx_init=args.ctx_init, csc=csc, position=args.position)
    print(f"  {len(classnames)} classes {classnames}, {len(train)} training images "
          f"({shots}{'' if min(per_class) == max(per_class) else '-' + str(max(per_class))} per class), "
          f"context {tuple(learner.ctx.shape)} ({'CSC' if csc else 'generic'}, position "
          f"{args.position}, init {repr(args.ctx_init) if args.ctx_init else 'N(0, 0.02^2)'})")

    images = [load_image(p) for p, _ in train]
    val = [(p, folder_names.index(c)) for c, files in val_dirs for p in files]
    val_images = [load_image(p) for p, _ in val]

    # the model must be the exported one (the context records text_embed.onnx's sha256)
    chk = check_towers(model, learner, args.model, side_text, side_image, eval_tensor(images[0], pre))
    print(f"  parity vs {args.model}: text_embed.onnx max abs {chk['text_max_abs']:.2e}, "
          f"image.onnx (normalised) max abs {chk['image_max_abs_normalised']:.2e}  "
          f"[{time.time() - t0:.1f}s]")
    logit_scale = model.logit_scale.exp().detach().float()

    val_feats = val_labels = None
    if val:
        xs = [eval_tensor(im, pre) for im in val_images]
        val_feats = torch.cat([encode(model, torch.stack(xs[i:i + TEST_BATCH]))
                               for i in range(0, len(xs), TEST_BATCH)])
        val_labels = torch.tensor([l for _, l in val])

    labels_all = torch.tensor([l for _, l in train])
    tf = train_transform(pre)
    n = len(train)
    drop_last = n >= args.batch_size  # Dassl build_data_loader: is_train and len >= batch_size
    passes = None
    if args.feature_passes:
        t1 = time.time()
        passes = []
        for _ in range(args.feature_passes):
            xs = torch.stack([tf(im) for im in images])
            passes.append(torch.cat([encode(model, xs[i:i + TEST_BATCH]) for i in range(0, n, TEST_BATCH)]))
        print(f"  encoded {args.feature_passes} augmented passes over the shots [{time.time() - t1:.1f}s]")

    optim = build_optimizer([learner.ctx], lr=args.lr)
    sched = ConstantWarmupCosine(optim, max_epoch)

    def val_acc():
        if val_feats is None:
            return None
        with torch.no_grad():
            w = learner.weights(model)
        return 100.0 * int((val_feats @ w.t()).argmax(-1).eq(val_labels).sum()) / len(val_labels)

    acc0 = val_acc()
    if acc0 is not None:
        print(f"  val top-1 before training: {acc0:.2f}%")
    # Dassl's train loader with num_workers=0: RandomSampler, batch_size, drop_last; it yields
    # indices and the views are made here (same order of random draws as in the loader)
    loader = torch.utils.data.DataLoader(list(range(n)), batch_size=args.batch_size,
                                         sampler=torch.utils.data.RandomSampler(range(n)),
                                         num_workers=0, drop_last=drop_last)
    log = []
    for epoch in range(max_epoch):
        t1 = time.time()
        lr = sched.get_lr()
        nb = len(loader)
        losses, accs = [], []
        for idx in loader:
            idx = idx.tolist()
            if passes is None:
                feats = encode(model, torch.stack([tf(images[i]) for i in idx]))
            else:
                feats = passes[epoch % len(passes)][idx]
            y = labels_all[idx]
            loss, logits = train_step(learner, model, optim, feats, y, logit_scale)
            losses.append(loss)
            accs.append(100.0 * int(logits.argmax(-1).eq(y).sum()) / len(idx))
        sched.step()
        rec = {"epoch": epoch + 1, "lr": lr, "loss": float(np.mean(losses)),
               "train_acc": float(np.mean(accs)), "batches": nb}
        va = val_acc()
        if va is not None:
            rec["val_acc"] = va
        rec["seconds"] = round(time.time() - t1, 3)
        log.append(rec)
        print(f"epoch {epoch + 1:>3}/{max_epoch}  lr {lr:.4e}  loss {rec['loss']:.4f}  "
              f"train-acc {rec['train_acc']:6.2f}" + (f"  val-acc {va:6.2f}" if va is not None else "")
              + f"  [{rec['seconds']:.1f}s]", flush=True)

    recipe = {
        "model": os.path.abspath(args.model), "arch": arch, "pretrained": side_text["pretrained"],
        "export_seed": args.seed, "fixture": args.fixture,
        "text_tower_sha256": side_text["sha256"], "parity": chk,
        "shots": os.path.abspath(args.shots), "num_shots": args.num_shots,
        "images_per_class": dict(zip(classnames, per_class)),
        "files": [os.path.relpath(p, args.shots) for p, _ in train],
        "val": os.path.abspath(args.val) if args.val else None, "val_images": len(val),
        "n_ctx": learner.n_ctx, "ctx_init": learner.ctx_init, "csc": csc, "position": args.position,
        "optimizer": {"name": "sgd", "lr": args.lr, "momentum": MOMENTUM,
                      "weight_decay": WEIGHT_DECAY, "dampening": 0, "nesterov": False},
        "scheduler": {"name": "cosine", "max_epoch": max_epoch, "warmup_epoch": WARMUP_EPOCH,
                      "warmup_type": "constant", "warmup_cons_lr": WARMUP_CONS_LR,
                      "warmup_recount": True, "stepped": "per epoch"},
        "batch_size": args.batch_size, "drop_last": drop_last, "sampler": "RandomSampler",
        "augmentation": {"random_resized_crop": {"size": crop, "scale": list(RRCROP_SCALE),
                                                 "interpolation": pre["interpolation"]},
                         "random_flip": True, "mean": pre["mean"], "std": pre["std"]},
        "feature_passes": args.feature_passes, "precision": "fp32",
        "logit_scale": float(logit_scale), "seed_train": args.seed_train,
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__},
    }
    training = {"recipe": recipe, "val_acc_init": acc0, "log": log}
    ctx = learner.ctx.detach().float().numpy()
    coop.save_context(args.out, ctx, classnames=classnames, position=args.position, csc=csc,
                      text_tower_sha256=side_text["sha256"], ctx_init=learner.ctx_init,
                      source="coop_train.py", training=training)
    if args.log_json:
        common.write_json(args.log_json, training)
    last = log[-1]
    print(f"wrote {args.out} (ctx {tuple(ctx.shape)}); final loss {last['loss']:.4f}"
          + (f", val top-1 {last['val_acc']:.2f}%" if "val_acc" in last else "")
          + f" [{time.time() - t0:.1f}s]")
    return training


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except UsageError as e:
        print(f"coop_train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
