"""The training loop on Hugging Face accelerate: one process, several GPUs or several machines
(`accelerate launch` / `torchrun`), mixed precision, gradient accumulation. Checkpoints are our
single-file safetensors (the network with its config) plus a small resume file.

    python -m emo_pipeline train --data clips/ --stage 2 --init out/stage1.safetensors --out out/stage2 --steps 2000
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..config import EMOConfig, preset
from ..io.loading import load_net, save_net
from ..io.safe_files import real_folder, write_atomic
from .dataset import TalkingFaceDataset
from .stages import TrainingModule


@dataclass
class TrainSettings:
    data: str
    out: str
    stage: int
    steps: int = 1000
    batch_size: int = 2
    lr: float = 1e-5  # the paper's, for all stages
    seed: int = 0
    init: str | None = None  # a network file to start from (ours, or Hallo's net.pth to fine-tune)
    preset: str = "tiny"  # the config of a network built from scratch
    vae: str | None = None  # VAE folder/file; default: the tiny random VAE (tests only)
    wav2vec: str | None = None
    mixed_precision: str = "no"
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False
    save_every: int = 500
    log_every: int = 10


def _components(settings: TrainSettings):
    from ..audio.encoder import AudioEncoder
    from ..tiny import tiny_components

    config: EMOConfig = preset(settings.preset)
    net = load_net(settings.init) if settings.init else None
    config = net.config if net is not None else config
    tiny_net, tiny_vae, tiny_encoder = tiny_components(config, settings.seed)
    if settings.vae:
        from ..vae import load_vae

        vae = load_vae(settings.vae)
    else:
        vae = tiny_vae
    encoder = AudioEncoder.from_pretrained(settings.wav2vec) if settings.wav2vec else tiny_encoder
    if net is None:
        net = tiny_net if config.name.startswith("tiny") else _fresh(config, settings.seed)
    return net, vae, encoder


def _fresh(config: EMOConfig, seed: int):
    from ..models import EMONet

    torch.manual_seed(seed)
    return EMONet(config)


def train(settings: TrainSettings, log=print):
    """Run (or resume) one stage; returns the final network file and the trained network."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    out = Path(settings.out)
    # cpu=True without a GPU: several processes then form a gloo group (accelerate's MULTI_CPU).
    accelerator = Accelerator(mixed_precision=settings.mixed_precision, cpu=not torch.cuda.is_available(),
                              gradient_accumulation_steps=settings.gradient_accumulation)
    set_seed(settings.seed)
    resume = out / "resume.json"
    state = json.loads(resume.read_text()) if resume.is_file() else None
    if state:  # resume from the last saved network and optimizer
        settings = TrainSettings(**{**asdict(settings), "init": str(out / state["network"])})
    net, vae, encoder = _components(settings)
    if settings.gradient_checkpointing:
        net.denoising_unet.gradient_checkpointing = True
    dataset = TalkingFaceDataset(settings.data, net.config, encoder, settings.stage)
    generator = torch.Generator().manual_seed(settings.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=settings.batch_size, shuffle=True, drop_last=True,
                                         generator=generator)
    module = TrainingModule(net, vae, settings.stage)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=1e-2)
    if state and (out / "optimizer.pt").is_file():
        optimizer.load_state_dict(torch.load(out / "optimizer.pt", weights_only=True))
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    step = state["step"] if state else 0
    noise = torch.Generator().manual_seed(settings.seed * 7919 + accelerator.process_index + step)
    epochs = math.ceil((settings.steps - step) / max(1, len(loader))) + 1
    for _ in range(epochs):
        for batch in loader:
            if step >= settings.steps:
                break
            with accelerator.accumulate(module):
                loss = module(batch, noise)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            step += 1
            if step % settings.log_every == 0 or step == settings.steps:
                mean = accelerator.gather(loss.detach()[None]).mean().item()
                if accelerator.is_main_process:
                    log(f"stage {settings.stage} step {step}/{settings.steps} loss {mean:.4f}")
            if step % settings.save_every == 0 or step == settings.steps:
                _save(accelerator, module, optimizer, out, step)
    accelerator.wait_for_everyone()
    return out / "network.safetensors", accelerator.unwrap_model(module).net


def _save(accelerator, module, optimizer, out: Path, step: int) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        real_folder(out)
        net = accelerator.unwrap_model(module).net
        save_net(net, out / "network.safetensors")
        write_atomic(out / "optimizer.pt", write=lambda f: torch.save(optimizer.state_dict(), f))
        write_atomic(out / "resume.json", json.dumps({"step": step, "network": "network.safetensors"}).encode())
    accelerator.wait_for_everyone()
