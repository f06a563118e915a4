"""The spoken-prompt recogniser: 64-band log-mel → strided convolutions → bidirectional GRU →
one CTC score per word of the Shapes caption vocabulary (imports torch; loaded only when the
encoder loads or trains)."""

from __future__ import annotations

import torch
from torch import nn

from loom.plugins.common.saved import SavedConfig, SavedModel

#: Sample rate the recogniser listens at; other rates are resampled to it.
SAMPLE_RATE = 16000
FAMILY = "spoken-prompt"


class RecogniserConfig(SavedConfig):
    family: str = FAMILY
    #: Words the recogniser can hear, in output order after the CTC blank (index 0). "," stands for
    #: a pause where a caption has a comma or a semicolon.
    vocabulary: list[str] = []
    n_mels: int = 64
    n_fft: int = 400
    hop: int = 160
    width: int = 192
    #: Strided convolutions, each halving the frame rate (3: 12.5 frames a second).
    downsample: int = 3
    hidden: int = 128
    layers: int = 1


class Recogniser(SavedModel):
    config_class = RecogniserConfig

    def __init__(self, cfg: RecogniserConfig):
        super().__init__(cfg)
        convs = []
        for k in range(cfg.downsample):
            convs += [nn.Conv1d(cfg.n_mels if k == 0 else cfg.width, cfg.width, 5, stride=2, padding=2), nn.GELU()]
        self.conv = nn.Sequential(*convs)
        self.gru = nn.GRU(cfg.width, cfg.hidden, num_layers=cfg.layers, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * cfg.hidden, len(cfg.vocabulary) + 1)

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """B×T waveforms at :data:`SAMPLE_RATE` → B×n_mels×frames log-mel, normalised per item and
        band over time (so loudness does not matter)."""
        import torchaudio

        cfg = self.cfg
        if "_mel" not in self.__dict__:  # kept out of the state dict: it holds no learned weights
            mel = torchaudio.transforms.MelSpectrogram(
                SAMPLE_RATE, n_fft=cfg.n_fft, hop_length=cfg.hop, n_mels=cfg.n_mels
            )
            object.__setattr__(self, "_mel", mel.to(waveforms.device))
        mel = torch.log(self.__dict__["_mel"](waveforms) + 1e-6)
        return normalise(mel)

    def forward(self, mel: torch.Tensor, lengths: "torch.Tensor | None" = None) -> torch.Tensor:
        """B×n_mels×frames → B×frames/2**downsample×(vocabulary+1) log-probabilities. ``lengths`` (output
        frames per item) keeps a padded item's scores the same as alone (training batches)."""
        h = self.conv(mel).transpose(1, 2)
        if lengths is None:
            h, _ = self.gru(h)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=h.shape[1])
        return self.out(h).log_softmax(-1)

    def output_frames(self, frames: torch.Tensor) -> torch.Tensor:
        for _ in range(self.cfg.downsample):
            frames = (frames - 1) // 2 + 1
        return frames

    def decode(self, logp: torch.Tensor) -> list[str]:
        """Greedy CTC decoding of one item's frames×(vocabulary+1) scores into words."""
        best = logp.argmax(-1).tolist()
        words, previous = [], 0
        for k in best:
            if k != previous and k != 0:
                words.append(self.cfg.vocabulary[k - 1])
            previous = k
        return words


def normalise(mel: torch.Tensor) -> torch.Tensor:
    mean = mel.mean(-1, keepdim=True)
    std = mel.std(-1, keepdim=True).clamp(min=1e-3)
    return (mel - mean) / std


def as_text(words: list[str]) -> str:
    """Recognised words as a prompt: commas attach to the word before them."""
    text = ""
    for w in words:
        if w == ",":
            if text and not text.endswith(","):
                text += ","
        else:
            text += (" " if text else "") + w
    return text.strip(", ")


def confidence(logp: torch.Tensor, words: int) -> float:
    """How sure the recogniser is of the ``words`` (pauses included) it heard in one item's
    frames×(vocabulary+1) scores: the likeliest path's probability per word, exp(Σ best log-prob /
    words), 0 when nothing is heard. Per word, not per frame: silence and noise are uncertain in
    every frame between the few words they yield, while speech is uncertain only between words."""
    if words == 0:
        return 0.0
    return float(torch.exp(logp.float().max(-1).values.sum() / words))
