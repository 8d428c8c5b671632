"""DNA-barcode k-mer tokenizer (a transformers ``PreTrainedTokenizer``) reproducing the original CLIBD / BarcodeBERT 5-mer rules.

Original pipeline (``bioscanclip`` ``PadSequence(660)`` + ``KmerTokenizer(5, 5)`` + torchtext vocab):

1. truncate to the first 660 characters or right-pad with ``N`` to exactly 660;
2. cut non-overlapping 5-mers (offsets 0, 5, ..., 655): 132 k-mers;
3. ids: ``<MASK>``=0, ``<CLS>``=1, ``<UNK>``=2, then 3 + base-4 value of the k-mer (A=0 C=1 G=2 T=3),
   so ``AAAAA``=3 and ``TTTTT``=1026; any k-mer with a character other than upper-case ``ACGT``
   (``N``, IUPAC codes, ``-``, lower-case letters) is ``<UNK>``=2;
4. prepend id 0: 133 ids per barcode.

Calling the tokenizer handles the whole batch as one ``uint8`` array with lookup tables: there is no
Python loop per k-mer, unlike the generic per-token path of ``PreTrainedTokenizer``, which it replaces.
``tokenize``/``convert_tokens_to_ids``, ``pad``, ``decode``/``batch_decode`` and
``save_pretrained``/``from_pretrained`` are the standard transformers ones; ``save_pretrained`` also
writes the ``auto_map`` and copies this file, so ``AutoTokenizer.from_pretrained(folder,
trust_remote_code=True)`` loads a saved tokenizer without this package. Hub file: imports only the
standard library, numpy and public ``transformers`` names (torch only when tensors are asked for).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from transformers import BatchEncoding, PreTrainedTokenizer

VOCAB_NAME = "vocab.txt"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
_HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "force_download", "proxies")
SPECIAL_TOKENS = ("<MASK>", "<CLS>", "<UNK>")
MASK_ID, CLS_ID, UNK_ID = 0, 1, 2
PAD_ID = UNK_ID  # padding k-mers are all N, which the original maps to <UNK>
MAX_K = 8  # 4**8 = 65,536 k-mers: larger vocabularies do not fit a BERT embedding sensibly
_BASES = "ACGT"
# IUPAC nucleotide codes; with lower case and the alignment gap "-" anything else is a data error.
IUPAC_NUCLEOTIDES = "ACGTURYSWKMBDHVN"
IUPAC_CHARACTERS = IUPAC_NUCLEOTIDES + IUPAC_NUCLEOTIDES.lower() + "-"
SETTINGS = ("k", "stride", "max_length", "leading_id", "clean", "pad_char")
# Keys of the first saved format (before the tokenizer was a PreTrainedTokenizer) that are not settings.
_LEGACY_KEYS = ("special_tokens", "vocab_size")

# byte -> code: 0..3 for upper-case ACGT, 4 for the other IUPAC characters (the k-mer becomes <UNK>),
# 5 for bytes outside the alphabet (an input error). Used as a bytes.translate table: translating a
# whole chunk is one C pass, and one max() over the codes checks the alphabet.
_CODE_TABLE = np.full(256, 5, dtype=np.uint8)
_CODE_TABLE[list(IUPAC_CHARACTERS.encode("ascii"))] = 4
for _i, _b in enumerate(_BASES):
    _CODE_TABLE[ord(_b)] = _i
_CODE_BYTES = _CODE_TABLE.tobytes()
_VALID_BYTES = IUPAC_CHARACTERS.encode("ascii")
_CLEAN_TRANSLATION = {ord(c): None for c in " \t\r\n\v\f-"}
# Rows processed at once: under 1 MB of bytes per step keeps the temporaries in cache (measured
# 2-3x faster than 8-16k rows on 100k barcodes).
_CHUNK_ROWS = 1024
# k up to 6 uses a lookup table indexed by the k-mer read as an octal number (8**6 entries).
_MAX_OCTAL_K = 6
_TRUNCATE = {True: True, "longest_first": True, "only_first": True, False: False, "do_not_truncate": False}
_PAD = {True: "longest", "longest": "longest", "max_length": "max_length", False: None, "do_not_pad": None}
# Options of PreTrainedTokenizer.__call__ that make no sense for one barcode per row.
_UNSUPPORTED = ("text_pair", "text_target", "text_pair_target", "is_split_into_words", "return_overflowing_tokens",
                "return_special_tokens_mask", "return_offsets_mapping", "return_length")


def _octal_id_table(k: int) -> np.ndarray:
    """Id of every k-digit octal number whose digits are base codes (0..3 = ACGT, 4 and 5 = other)."""
    octal = np.arange(8**k)
    digits = (octal[:, None] >> (3 * np.arange(k - 1, -1, -1))[None, :]) & 7
    value = digits @ (4 ** np.arange(k - 1, -1, -1))
    return np.where((digits > 3).any(axis=1), UNK_ID, value + len(SPECIAL_TOKENS)).astype(np.int64)


def _to_lists(ids: Any) -> Any:
    """Nested Python lists (or an int) from lists, numpy arrays or torch tensors."""
    return ids.tolist() if hasattr(ids, "tolist") else ids


class BarcodeKmerTokenizer(PreTrainedTokenizer):
    """Turns DNA barcodes into fixed-length k-mer ids, exactly as the original CLIBD code does.

    Args:
        k: k-mer size (5 in CLIBD; 1 to 8).
        stride: distance between k-mer starts (5: non-overlapping).
        max_length: barcodes are truncated to, or right-padded with ``pad_char`` to, this many
            **characters** (660); the number of ids per barcode is ``model_max_length`` (133).
        leading_id: id put before the k-mers (0, the ``<MASK>`` id, in CLIBD); ``None`` puts nothing.
        clean: when True, upper-case each barcode and remove whitespace and ``-`` gaps before
            tokenising. Off by default because the original maps lower-case letters and gaps to
            ``<UNK>``; turn it on for new models or messy input.
        pad_char: padding character (``N``, which makes padding k-mers ``<UNK>``).

    Special tokens: ``mask_token`` ``<MASK>`` (0), ``cls_token`` ``<CLS>`` (1), ``unk_token`` ``<UNK>`` (2),
    and ``pad_token`` ``<UNK>`` too, because the original pads with ``N`` k-mers, which are ``<UNK>``:
    ``pad`` therefore gives the same ids as tokenising with padding. The attention mask marks the
    leading id and every k-mer that overlaps the barcode (1), and the k-mers made only of padding (0).
    The original model attends to every position; the ``masked_*`` poolings of the model use this mask.

    Example:

    ```python
    >>> tok = BarcodeKmerTokenizer()
    >>> out = tok(["AAAAATTTTT"], return_tensors="pt")
    >>> out["input_ids"][0, :4].tolist(), out["input_ids"].shape
    ([0, 3, 1026, 2], torch.Size([1, 133]))
    >>> tok.decode(out["input_ids"][0], skip_special_tokens=True)
    'AAAAATTTTT'

    ```
    """

    vocab_files_names: dict[str, str] = {}  # the vocabulary follows from k; vocab.txt is written for people
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        k: int = 5,
        stride: int = 5,
        max_length: int = 660,
        leading_id: int | None = 0,
        clean: bool = False,
        pad_char: str = "N",
        **kwargs: Any,
    ) -> None:
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if max_length < k:
            raise ValueError(f"max_length ({max_length} characters) must be >= k ({k})")
        if not isinstance(pad_char, str) or len(pad_char) != 1 or pad_char not in IUPAC_CHARACTERS:
            raise ValueError(f"pad_char must be one IUPAC character, got {pad_char!r}")
        vocab_size = len(SPECIAL_TOKENS) + 4**k
        if leading_id is not None and not 0 <= leading_id < vocab_size:
            raise ValueError(f"leading_id must be None or an id in 0..{vocab_size - 1}, got {leading_id}")
        # Set before the base class, which reads the vocabulary while registering the special tokens.
        self.k, self.stride, self.max_length = int(k), int(stride), int(max_length)
        self.leading_id = None if leading_id is None else int(leading_id)
        self.clean, self.pad_char = bool(clean), pad_char
        self.num_kmers = (self.max_length - self.k) // self.stride + 1
        self._octal_table = _octal_id_table(self.k) if self.k <= _MAX_OCTAL_K else None
        self._vocab = {self._id_to_token(i): i for i in range(vocab_size)}
        for key in (*_LEGACY_KEYS, "model_max_length", "mask_token", "cls_token", "unk_token", "pad_token"):
            kwargs.pop(key, None)  # fixed by the settings above
        super().__init__(
            k=self.k, stride=self.stride, max_length=self.max_length, leading_id=self.leading_id,
            clean=self.clean, pad_char=self.pad_char, model_max_length=self.num_kmers + (self.leading_id is not None),
            mask_token=SPECIAL_TOKENS[MASK_ID], cls_token=SPECIAL_TOKENS[CLS_ID], unk_token=SPECIAL_TOKENS[UNK_ID],
            pad_token=SPECIAL_TOKENS[PAD_ID], **kwargs,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """``PreTrainedTokenizer.from_pretrained``, refusing a folder or repo without ``tokenizer_config.json``
        (the generic loader would quietly build the default settings, which may not be the model's).

        Raises:
            OSError: no ``tokenizer_config.json`` at the path (with ``subfolder``, inside it).
        """
        from transformers.utils import cached_file

        subfolder = kwargs.get("subfolder", "") or ""
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        try:
            cached_file(str(pretrained_model_name_or_path), TOKENIZER_CONFIG_NAME, subfolder=subfolder, **hub_kwargs)
        except (OSError, ValueError) as error:
            where = os.path.join(str(pretrained_model_name_or_path), subfolder, TOKENIZER_CONFIG_NAME)
            raise OSError(f"No DNA tokenizer found: {where} does not exist or cannot be read ({error})") from error
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @property
    def settings(self) -> dict[str, Any]:
        """The construction settings (``k``, ``stride``, ``max_length``, ``leading_id``, ``clean``, ``pad_char``)."""
        return {name: getattr(self, name) for name in SETTINGS}

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        """3 special tokens + 4**k k-mers (1027 for k=5)."""
        return len(SPECIAL_TOKENS) + 4**self.k

    def get_vocab(self) -> dict[str, int]:
        """Token -> id for all ``vocab_size`` tokens, in id order."""
        return dict(self._vocab)

    def _id_to_token(self, index: int) -> str:
        if not 0 <= index < self.vocab_size:
            raise ValueError(f"id {index} is outside the vocabulary (0..{self.vocab_size - 1})")
        if index < len(SPECIAL_TOKENS):
            return SPECIAL_TOKENS[index]
        value, chars = index - len(SPECIAL_TOKENS), []
        for _ in range(self.k):
            value, digit = divmod(value, 4)
            chars.append(_BASES[digit])
        return "".join(reversed(chars))

    # The three hooks of the PreTrainedTokenizer contract (tokenize, convert_tokens_to_ids, convert_ids_to_tokens).
    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        """The k-mers of one barcode (no truncation or padding k-mers; the last one padded with ``pad_char``)."""
        (text,) = self.validate([text])
        return [text[start : start + self.k].ljust(self.k, self.pad_char) for start in range(0, len(text), self.stride)]

    def _convert_token_to_id(self, token: str) -> int:
        return self._vocab.get(token, UNK_ID)

    def _convert_id_to_token(self, index: int) -> str:
        return self._id_to_token(int(index))

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """The tokens joined (for ``stride == k`` the k-mers' bases, special tokens written out)."""
        return "".join(tokens)

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None) -> list[int]:
        """``[leading_id, *ids]`` (just ``ids`` when ``leading_id`` is None); pairs are not supported."""
        if token_ids_1 is not None:
            raise ValueError("A barcode tokenizer takes one sequence per row, not pairs")
        return ([] if self.leading_id is None else [self.leading_id]) + list(token_ids_0)

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 for special tokens (the leading id; with ``already_has_special_tokens``, every ``<MASK>``,
        ``<CLS>`` and ``<UNK>``, so masked-LM collators never mask ``<UNK>``, as BarcodeBERT does)."""
        if token_ids_1 is not None:
            raise ValueError("A barcode tokenizer takes one sequence per row, not pairs")
        if already_has_special_tokens:
            return [int(int(i) < len(SPECIAL_TOKENS)) for i in token_ids_0]
        return ([] if self.leading_id is None else [1]) + [0] * len(token_ids_0)

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """1 (the leading id), or 0 when ``leading_id`` is None."""
        return int(self.leading_id is not None)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        """Write a human-readable ``vocab.txt`` (one token per line, id order); loading does not need it."""
        path = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + VOCAB_NAME)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(self._vocab) + "\n")
        return (path,)

    # ------------------------------------------------------------------ validation
    def validate(self, sequences: Sequence[str]) -> list[str]:
        """Check a batch and return it (cleaned when ``clean=True``).

        Raises:
            TypeError: an item is not a string (names its index).
            ValueError: an item is empty, or contains characters outside the IUPAC nucleotide
                alphabet + ``-`` (names the index and the characters).
        """
        sequences, _ = self._prepare(sequences)
        self._check_alphabet(sequences)
        return sequences

    def _prepare(self, sequences: str | Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Types, cleaning and emptiness: the list of barcodes and their lengths."""
        if isinstance(sequences, str):
            sequences = [sequences]
        if not isinstance(sequences, Sequence) and not hasattr(sequences, "__iter__"):
            raise TypeError(f"DNA input must be a string or a list of strings, got {type(sequences).__name__}")
        sequences = list(sequences)
        for index, seq in enumerate(sequences):
            if not isinstance(seq, str):
                raise TypeError(f"DNA barcode at index {index} is {type(seq).__name__}, not a string: {seq!r:.60}")
        if self.clean:
            sequences = [s.translate(_CLEAN_TRANSLATION).upper() for s in sequences]
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        if lengths.size and lengths.min() == 0:
            index = int(np.argmin(lengths))
            raise ValueError(f"DNA barcode at index {index} is empty" + (" after cleaning" if self.clean else ""))
        return sequences, lengths

    def _check_alphabet(self, sequences: list[str], offset: int = 0) -> None:
        """Raise for the first barcode with a character outside the alphabet (index counted from ``offset``)."""
        joined = "".join(sequences)
        # Deleting every allowed byte leaves nothing when the batch is clean.
        if joined.isascii() and not joined.encode("ascii").translate(None, _VALID_BYTES):
            return
        for index, seq in enumerate(sequences):
            if not seq.isascii() or seq.encode("ascii").translate(None, _VALID_BYTES):
                self._raise_invalid(offset + index, seq)

    @staticmethod
    def _raise_invalid(index: int, seq: str) -> None:
        chars = sorted({c for c in seq if c not in IUPAC_CHARACTERS})
        hint = " (pass clean=True to strip whitespace)" if any(c.isspace() for c in chars) else ""
        raise ValueError(
            f"DNA barcode at index {index} contains characters outside the IUPAC nucleotide alphabet: "
            f"{''.join(chars)!r}{hint}"
        )

    # ------------------------------------------------------------------ tokenisation
    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = "max_length",
        truncation: bool | str | None = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        **kwargs: Any,
    ) -> BatchEncoding:
        """Tokenise one barcode or a batch into ``input_ids`` (and ``attention_mask``).

        The defaults reproduce the original: every barcode is truncated or ``N``-padded to
        ``self.max_length`` characters, giving ``model_max_length`` ids (133). The transformers
        options mean what they mean elsewhere, in ids: ``padding=True`` pads to the longest row,
        ``padding=False`` returns each row's own ids (the leading id and the k-mers overlapping the
        barcode), ``max_length`` (ids, leading id included) truncates and/or pads to that many ids,
        ``truncation=False`` keeps every k-mer of longer barcodes. Padding ids are ``<UNK>`` (2),
        exactly the ids of ``N`` padding. Pairs, word lists, offsets and overflow are not supported.

        Args:
            text: a barcode or a list of barcodes.
            add_special_tokens: put ``leading_id`` first.
            return_tensors: ``"pt"`` (torch int64), ``"np"`` (numpy int64) or ``None`` (lists).
            return_token_type_ids: also return zeros ``token_type_ids``.
            return_attention_mask: return the mask described in the class docstring (default True).

        Returns:
            ``BatchEncoding`` with ``input_ids`` of shape ``[batch, model_max_length]`` by default (one
            flat list for a single barcode string without ``return_tensors``, as transformers does).

        Raises:
            TypeError / ValueError: a barcode is not a string, is empty or has characters outside the
                IUPAC alphabet (the message names its index); an option is not supported.
        """
        self._check_options(kwargs, padding, truncation, padding_side, return_tensors)
        if text is None:
            raise ValueError("Give the barcodes: tokenizer(text=...)")
        sequences, lengths = self._prepare(text)
        lead = self.leading_id if add_special_tokens else None
        first = int(lead is not None)
        truncate = _TRUNCATE[truncation if truncation is not None else True]
        if max_length is not None and max_length <= first:
            raise ValueError(f"max_length must leave room for at least one k-mer, got {max_length}")
        if not truncate:  # every k-mer that starts inside the barcode, and at least the original length
            longest = int(lengths.max()) if lengths.size else self.k
            chars = max(self.max_length, self.k + -(-max(longest - self.k, 0) // self.stride) * self.stride)
        elif max_length is None:
            chars = self.max_length
        else:
            chars = (max_length - first - 1) * self.stride + self.k
        ids, mask = self._encode(sequences, lengths, chars, lead)
        target = first + self.num_kmers if max_length is None else max_length
        ids, mask = self._pad_columns(ids, mask, _PAD[padding], target, truncate, pad_to_multiple_of)
        data: dict[str, Any] = {"input_ids": ids}
        if return_token_type_ids:
            data["token_type_ids"] = [np.zeros_like(row) for row in ids] if isinstance(ids, list) else np.zeros_like(ids)
        if return_attention_mask is not False:
            data["attention_mask"] = mask
        return self._finish(data, return_tensors, single=isinstance(text, str))

    def _check_options(self, kwargs: dict[str, Any], padding: Any, truncation: Any, padding_side: str | None,
                       return_tensors: str | None) -> None:
        for name in _UNSUPPORTED:
            if kwargs.pop(name, None):
                raise ValueError(f"{type(self).__name__} does not support {name}: it takes one barcode per row")
        if kwargs.pop("stride", 0):
            raise ValueError("Overflowing windows (stride=...) are not supported; the k-mer stride is a setting")
        for ignored in ("verbose", "split_special_tokens", "tokenizer_kwargs"):  # accepted, meaningless here
            kwargs.pop(ignored, None)
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}")
        if padding not in _PAD:
            raise ValueError(f"padding must be one of {list(_PAD)}, got {padding!r}")
        if truncation is not None and truncation not in _TRUNCATE:
            raise ValueError(f"truncation must be one of {list(_TRUNCATE)}, got {truncation!r}")
        if padding_side not in (None, "right"):
            raise ValueError("Barcodes are padded on the right (N after the sequence), as in the original")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")

    def _encode(
        self, sequences: list[str], lengths: np.ndarray, chars: int, lead: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``[batch, lead + k-mers]`` ids and mask of the barcodes truncated or padded to ``chars`` characters."""
        num_kmers = (chars - self.k) // self.stride + 1
        first = int(lead is not None)
        ids = np.empty((len(sequences), first + num_kmers), dtype=np.int64)
        mask = np.empty_like(ids)
        starts = np.arange(num_kmers) * self.stride
        for start in range(0, len(sequences), _CHUNK_ROWS):
            rows = slice(start, start + _CHUNK_ROWS)
            self._encode_chunk(sequences[rows], lengths[rows], start, chars, starts, ids[rows, first:], mask[rows, first:])
        if first:
            ids[:, 0] = lead
            mask[:, 0] = 1
        return ids, mask

    def _encode_chunk(
        self, sequences: list[str], lengths: np.ndarray, offset: int, length: int, starts: np.ndarray,
        kmer_ids: np.ndarray, kmer_mask: np.ndarray,
    ) -> None:
        """Fill the k-mer ids and mask of ``sequences`` (rows ``offset``... of the batch), all k-mers at once."""
        rows, num_kmers = len(sequences), len(starts)
        # One C-level pad/truncate per sequence, then a single [rows, length] byte matrix.
        try:
            padded = "".join(s[:length].ljust(length, self.pad_char) for s in sequences).encode("ascii")
        except UnicodeEncodeError:
            self._check_alphabet(sequences, offset)  # raises: some barcode has a non-ASCII character
            raise
        codes = np.frombuffer(padded.translate(_CODE_BYTES), dtype=np.uint8).reshape(rows, length)
        # The alphabet check: codes past `length` are not tokenised, but they are checked too.
        long_rows = np.flatnonzero(lengths > length)
        tails = "".join(sequences[i][length:] for i in long_rows)
        if codes.max() > 4 or not tails.isascii() or tails.encode("ascii").translate(None, _VALID_BYTES):
            self._check_alphabet(sequences, offset)
        if self.k == self.stride:
            windows = codes[:, : num_kmers * self.k].reshape(rows, num_kmers, self.k)
        else:
            windows = codes[:, starts[:, None] + np.arange(self.k)[None, :]]
        if self._octal_table is not None:
            # Each base is one octal digit (A..T = 0..3, other = 4 or 5); a table maps the octal number
            # straight to the id, <UNK> included, so validity needs no separate pass.
            octal = windows[:, :, 0].astype(np.uint16 if self.k <= 5 else np.int32)
            for j in range(1, self.k):
                octal <<= 3
                octal |= windows[:, :, j]
            kmer_ids[...] = self._octal_table[octal]
        else:
            value = np.zeros((rows, num_kmers), dtype=np.int64)
            for j in range(self.k):  # loop over positions inside a k-mer, vectorised over all k-mers
                value = value * 4 + windows[:, :, j]
            kmer_ids[...] = np.where(windows.max(axis=2) > 3, UNK_ID, value + len(SPECIAL_TOKENS))
        np.less(starts[None, :], np.minimum(lengths, length)[:, None], out=kmer_mask, casting="unsafe")

    @staticmethod
    def _pad_columns(
        ids: np.ndarray, mask: np.ndarray, padding: str | None, target: int, truncated: bool,
        pad_to_multiple_of: int | None,
    ) -> tuple[np.ndarray | list[np.ndarray], np.ndarray | list[np.ndarray]]:
        """Cut or extend the encoded columns to the requested padding; rows past their length hold ``<UNK>``.

        ``target`` is the ``max_length`` in ids; without truncation no row is cut below its length.
        """
        lengths = mask.sum(axis=1)
        if padding is None:
            if lengths.size and (lengths == ids.shape[1]).all():
                return ids, mask
            return [row[:n] for row, n in zip(ids, lengths)], [row[:n] for row, n in zip(mask, lengths)]
        longest = int(lengths.max()) if lengths.size else 0
        if padding == "longest":
            width = longest
        else:
            width = target if truncated else max(target, longest)
        if pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        if width > ids.shape[1]:
            extra = width - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, extra)), constant_values=PAD_ID)
            mask = np.pad(mask, ((0, 0), (0, extra)), constant_values=0)
        return ids[:, :width], mask[:, :width]

    @staticmethod
    def _finish(data: dict[str, Any], return_tensors: str | None, single: bool) -> BatchEncoding:
        """Lists (flat for one barcode given as a string, as transformers tokenizers do) or ``[batch, n]`` tensors."""
        ragged = any(isinstance(value, list) for value in data.values())
        if return_tensors is None:
            data = {key: [row.tolist() for row in value] if isinstance(value, list) else value.tolist()
                    for key, value in data.items()}
            if single:
                data = {key: value[0] for key, value in data.items()}
        elif ragged:
            raise ValueError("The barcodes give different numbers of ids; pass padding=True to return tensors")
        elif return_tensors == "pt":
            import torch  # only when asked for; zero-copy views of the numpy arrays

            data = {key: torch.from_numpy(value) for key, value in data.items()}
        return BatchEncoding(data)

    def encode(self, text: str, add_special_tokens: bool = True, return_tensors: str | None = None, **kwargs: Any) -> Any:
        """The ids of one barcode (``tokenizer(text, ...)["input_ids"][0]``; a ``[1, n]`` tensor with ``return_tensors``)."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes one barcode string, got {type(text).__name__}; call the tokenizer for a batch")
        return self(text, add_special_tokens=add_special_tokens, return_tensors=return_tensors,
                    return_attention_mask=False, **kwargs)["input_ids"]

    # ------------------------------------------------------------------ decoding
    def decode(self, token_ids: Any, skip_special_tokens: bool = False, **kwargs: Any) -> str | list[str]:
        """One id sequence -> a string (a batch -> a list of strings).

        With ``skip_special_tokens=True`` the result is the barcode's bases: the leading id is dropped,
        every position keeps its place (k-mer ``i`` starts at ``i * stride``), ``<UNK>`` (and masked)
        k-mers become ``N``, and the trailing ``<UNK>`` k-mers, the padding, are dropped. Otherwise the
        tokens are joined as they are (``<MASK>AAAAATTTTT<UNK>...``).
        """
        token_ids = _to_lists(token_ids)
        if isinstance(token_ids, (list, tuple)) and token_ids and isinstance(token_ids[0], (list, tuple)):
            return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in token_ids]
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if not skip_special_tokens:
            return "".join(self._id_to_token(int(i)) for i in token_ids)
        ids = [int(i) for i in token_ids]
        if ids and self.leading_id is not None and ids[0] == self.leading_id:
            ids = ids[1:]
        while ids and ids[-1] == PAD_ID:
            ids.pop()
        if not ids:
            return ""
        bases = [self.pad_char] * ((len(ids) - 1) * self.stride + self.k)
        for position, index in enumerate(ids):
            if index >= len(SPECIAL_TOKENS):
                start = position * self.stride
                bases[start : start + self.k] = self._id_to_token(index)
        return "".join(bases)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False, **kwargs: Any) -> list[str]:
        """[`decode`] of every row."""
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in _to_lists(sequences)]


BarcodeKmerTokenizer.register_for_auto_class("AutoTokenizer")

__all__ = ["BarcodeKmerTokenizer", "IUPAC_CHARACTERS", "SPECIAL_TOKENS"]
