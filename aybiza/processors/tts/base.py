"""The text-to-speech contract and the stage that speaks the agent's text.

An engine (:class:`SpeechSynthesizer`) turns text into PCM16 chunks, first
chunk as early as it can. :class:`TTSProcessor` runs an engine off the event
loop for each :class:`~aybiza.pipeline.frames.AgentText`, in order, and
pushes :class:`~aybiza.pipeline.frames.OutputAudio` as chunks come.

Barge-in: an :class:`~aybiza.pipeline.frames.Interruption` drops the queued
text, cancels the synthesis in progress and is then forwarded, so no audio of
the interrupted turn follows it downstream. Every queued item carries the
*epoch* it was queued in and every push re-checks it, which also covers a
chunk already handed back by the engine thread when the interruption lands.

The stage remembers the interrupted turn from the sentence the caller was
hearing (the caller hears audio in real time from the moment the output
steered ``AgentSpeaking(True)``): when turn-taking finds the interruption
was no turn (:class:`~aybiza.pipeline.frames.AgentResume`), that sentence and
the rest are spoken again.

The helpers below (clause splitting, a WAV header reader, a subprocess that
writes WAV to stdout) are shared by the embedded engines.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from ...errors import ConfigError, FatalProviderError
from ...pipeline.context import CallContext
from ...pipeline.frames import AgentResume, AgentSpeaking, AgentText, AgentTurnDone, Frame, Interruption, OutputAudio
from ...pipeline.ledger import Stage
from ...pipeline.processor import Processor
from ...pipeline.worker import Worker

__all__ = [
    "AudioChunk",
    "Preloadable",
    "SpeechSynthesizer",
    "TTSProcessor",
    "primary_language",
    "read_wav_header",
    "require_binary",
    "split_clauses",
    "stream_wav_command",
]

AudioChunk = tuple[bytes, int]
"""``(pcm, sample_rate)``: PCM16LE mono samples and their rate in Hz."""


class SpeechSynthesizer(Protocol):
    """A TTS engine: ``synthesize`` yields PCM16LE mono chunks, the first as early as possible."""

    name: str

    def synthesize(self, text: str, language: str) -> Iterator[AudioChunk]:
        """Speak ``text`` (BCP-47 ``language``); runs in a worker thread, may block."""
        ...


@runtime_checkable
class Preloadable(Protocol):
    """An engine that can load its model ahead of the first sentence (blocking; call in a thread)."""

    def warm(self) -> None:
        """Load and exercise the model once so the first real request is not the slow one."""
        ...


# A clause ends at , ; : . ? ! (or an ellipsis) followed by white space, so
# "1,000" and "3.5" stay whole.
_CLAUSE_END = re.compile(r"(?<=[,;:.?!…])\s+")

# Words a long opening clause may be cut before: the cut then sounds like a
# comma, not like a word torn from its neighbour.
_CONNECTIVES = frozenset(
    (
        "and or but so because which that who when where if "
        "for from with at in on to by about after before until"
    ).split()
)
_MIN_PIECE_WORDS = 3


def _cut_long_opening(clause: str, max_words: int) -> list[str]:
    """Cut a clause longer than ``max_words`` words before a connective, or leave it whole.

    The first piece keeps 3 to ``max_words`` words, the second at least 3.
    """
    words = clause.split()
    if len(words) <= max_words:
        return [clause]
    for index in range(_MIN_PIECE_WORDS, min(max_words, len(words) - _MIN_PIECE_WORDS) + 1):
        if words[index].lower() in _CONNECTIVES:
            return [" ".join(words[:index]), " ".join(words[index:])]
    return [clause]


def split_clauses(text: str, *, first_max_words: int | None = None) -> list[str]:
    """Split text after clause punctuation; drop pieces with nothing to say (no letter or digit).

    With ``first_max_words``, an opening clause longer than that is also cut
    before a connective word ("for", "and", "at"...), so the first audio of a
    long unpunctuated sentence is not held back by all of it.
    """
    clauses = [c for c in _CLAUSE_END.split(text.strip()) if any(ch.isalnum() for ch in c)]
    if clauses and first_max_words is not None:
        clauses[:1] = _cut_long_opening(clauses[0], first_max_words)
    return clauses


def primary_language(tag: str) -> str:
    """The primary subtag of a BCP-47 tag, lower case: ``en-GB`` -> ``en``."""
    return tag.replace("_", "-").split("-", 1)[0].lower()


def require_binary(binary: str, package: str) -> str:
    """The full path of ``binary`` or a ConfigError naming the Debian package that provides it."""
    path = shutil.which(binary)
    if path is None:
        raise ConfigError(f"{binary!r} not found on PATH; install it (apt-get install {package})")
    return path


def _read_exactly(read: Callable[[int], bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        block = read(size - len(data))
        if not block:
            break
        data += block
    return data


def read_wav_header(read: Callable[[int], bytes]) -> int:
    """Consume a RIFF/WAVE header up to the data chunk's payload; return the sample rate.

    Only PCM16 mono is accepted. The data chunk's size is ignored because
    streaming writers (``espeak-ng --stdout``) put a placeholder there.
    """
    riff = _read_exactly(read, 12)
    if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE stream")
    sample_rate = 0
    while True:
        head = _read_exactly(read, 8)
        if len(head) < 8:
            raise ValueError("WAV stream ended before its data chunk")
        chunk_id, size = head[:4], int.from_bytes(head[4:], "little")
        if chunk_id == b"data":
            if sample_rate == 0:
                raise ValueError("WAV data chunk before its fmt chunk")
            return sample_rate
        body = _read_exactly(read, size + (size & 1))
        if chunk_id == b"fmt ":
            fmt, channels = int.from_bytes(body[0:2], "little"), int.from_bytes(body[2:4], "little")
            bits = int.from_bytes(body[14:16], "little")
            if fmt != 1 or channels != 1 or bits != 16:
                raise ValueError(f"expected PCM16 mono WAV, got format {fmt}, {channels} ch, {bits} bit")
            sample_rate = int.from_bytes(body[4:8], "little")


def stream_wav_command(
    argv: Sequence[str], engine: str, read_size: int = 16384
) -> Generator[AudioChunk, None, None]:
    """Run a command that writes a PCM16 mono WAV to stdout; yield its samples as they arrive.

    Closing the generator early kills the process. A non-zero exit raises
    FatalProviderError with the command's stderr.
    """
    process = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        try:
            sample_rate = read_wav_header(process.stdout.read)
        except ValueError as error:
            process.wait()
            raise FatalProviderError(
                f"{engine} wrote no usable WAV ({error}); exit {process.returncode}: "
                f"{process.stderr.read().decode(errors='replace').strip()}",
                provider=engine,
            ) from None
        carry = b""
        while block := process.stdout.read(read_size):
            block = carry + block
            usable = len(block) & ~1  # whole 16-bit samples only
            carry = block[usable:]
            if usable:
                yield block[:usable], sample_rate
        if process.wait() != 0:
            raise FatalProviderError(
                f"{engine} exited {process.returncode}: "
                f"{process.stderr.read().decode(errors='replace').strip()}",
                provider=engine,
            )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


@dataclass(frozen=True, slots=True)
class _Job:
    """A queued frame with the epoch it was queued in and when it arrived."""

    frame: AgentText | AgentTurnDone
    epoch: int
    arrived_at: float


_Item = AudioChunk | BaseException


class _TurnText:
    """The current agent turn's sentences and the seconds of audio made for each, to resume it after a false alarm."""

    __slots__ = ("texts", "seconds")

    def __init__(self) -> None:
        self.texts: list[AgentText] = []
        self.seconds: list[float] = []

    def add(self, text: AgentText) -> None:
        if self.texts and self.texts[0].turn_id != text.turn_id:
            self.texts, self.seconds = [], []
        if text.turn_id >= 0:
            self.texts.append(text)
            self.seconds.append(0.0)

    def spoken(self, text: AgentText, seconds: float) -> None:
        for index in range(len(self.texts) - 1, -1, -1):
            if self.texts[index] is text:
                self.seconds[index] += seconds
                return

    def from_heard(self, heard_s: float) -> list[AgentText]:
        """The sentences from the one playing ``heard_s`` into the turn's audio to the end."""
        elapsed = 0.0
        for index, seconds in enumerate(self.seconds):
            if seconds == 0.0 or heard_s < elapsed + seconds:
                return self.texts[index:]
            elapsed += seconds
        return []


def _produce(
    synthesizer: SpeechSynthesizer,
    text: str,
    language: str,
    send: MemoryObjectSendStream[_Item],
    stop: threading.Event,
) -> None:
    """Worker thread: run the engine, hand each chunk to the event loop; stop early when asked."""
    chunks: Iterator[AudioChunk] | None = None
    try:
        chunks = synthesizer.synthesize(text, language)
        for chunk in chunks:
            if stop.is_set():
                return
            anyio.from_thread.run_sync(send.send_nowait, chunk)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.RunFinishedError):
        return  # the consumer is gone (interrupted or the call ended)
    except Exception as error:  # handed to the consumer, which raises it in the call's task
        try:
            anyio.from_thread.run_sync(send.send_nowait, error)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.RunFinishedError):
            return
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # a subprocess engine kills its process here


async def _run_producer(
    synthesizer: SpeechSynthesizer,
    text: str,
    language: str,
    send: MemoryObjectSendStream[_Item],
    stop: threading.Event,
) -> None:
    async with send:  # closing it ends the consumer's loop
        await anyio.to_thread.run_sync(
            _produce, synthesizer, text, language, send, stop, abandon_on_cancel=True
        )


class TTSProcessor(Processor):
    """Speaks AgentText as OutputAudio, in order, off the event loop; stops at once on barge-in.

    ``fallback`` speaks every language other than English (for an English-only
    main engine such as piper's joe voice). AgentTurnDone is queued behind
    the turn's text so it reaches downstream after the turn's audio. Records
    ``tts_first_byte`` (first AgentText of a turn to its first chunk) and the
    characters each engine synthesised on the call's ledger (an engine that
    accounts for itself, such as the audio cache, sets ``meters_usage``).
    """

    __slots__ = ("_synthesizer", "_fallback", "_worker", "_epoch", "_timed_turn", "_turn", "_heard_from",
                 "_resumable")

    name = "tts"
    consumes = frozenset({AgentText, AgentTurnDone, Interruption, AgentResume, AgentSpeaking})
    produces = frozenset({OutputAudio, AgentTurnDone})

    def __init__(
        self,
        synthesizer: SpeechSynthesizer,
        *,
        fallback: SpeechSynthesizer | None = None,
        max_queued: int = 64,
    ) -> None:
        super().__init__()
        self._synthesizer = synthesizer
        self._fallback = fallback
        self._worker: Worker[_Job] = Worker(self._speak, max_queued)
        self._epoch = 0
        self._timed_turn: int | None = None
        self._turn = _TurnText()
        self._heard_from: float | None = None
        self._resumable: list[AgentText] = []

    def synthesizer_for(self, language: str) -> SpeechSynthesizer:
        """The engine that speaks ``language``."""
        if self._fallback is not None and primary_language(language) != "en":
            return self._fallback
        return self._synthesizer

    async def start(self, ctx: CallContext, tg: TaskGroup) -> None:
        """Start the synthesis worker; warm preloadable engines in the background."""
        await super().start(ctx, tg)
        self._worker.start(tg, name=f"tts:{ctx.call_id}")
        for engine in (self._synthesizer, self._fallback):
            if isinstance(engine, Preloadable):
                tg.start_soon(self._warm, engine, name=f"tts-warm:{ctx.call_id}")

    async def stop(self) -> None:
        """Close the queue."""
        await self._worker.close()

    async def control(self, frame: Frame) -> None:
        """Note when the caller starts hearing the agent (where an interruption lands in the turn)."""
        if isinstance(frame, AgentSpeaking):
            self._heard_from = time.monotonic() if frame.speaking else None
        await self.steer(frame)

    async def process(self, frame: Frame) -> None:
        """Queue agent text and turn ends; on Interruption flush, then forward; pass the rest on."""
        if isinstance(frame, AgentText):
            if frame.text.strip():
                self._turn.add(frame)
                self._resumable = []
                await self._worker.put(_Job(frame, self._epoch, time.monotonic()))
        elif isinstance(frame, AgentTurnDone):
            await self._worker.put(_Job(frame, self._epoch, time.monotonic()))
        elif isinstance(frame, Interruption):
            self._epoch += 1  # before flush: a chunk already on its way is dropped too
            dropped = self._worker.flush()
            heard = time.monotonic() - self._heard_from if self._heard_from is not None else 0.0
            self._resumable = self._turn.from_heard(heard)
            self._turn = _TurnText()
            if self.ctx is not None and self.ctx.log.isEnabledFor(logging.DEBUG):
                self.ctx.log.debug("tts interrupted, %d queued item(s) dropped", dropped)
            await self.push(frame)
        elif isinstance(frame, AgentResume):
            await self._resume()
        else:
            await self.push(frame)

    async def _resume(self) -> None:
        """Speak the interrupted turn again from the sentence the caller was hearing."""
        texts, self._resumable = self._resumable, []
        if not texts:
            return
        if self.ctx is not None:
            self.ctx.log.info("tts: resuming turn %d (%d sentence(s))", texts[0].turn_id, len(texts))
        now = time.monotonic()
        for text in texts:
            self._turn.add(text)
            await self._worker.put(_Job(text, self._epoch, now))
        await self._worker.put(_Job(AgentTurnDone(texts[0].turn_id), self._epoch, now))

    @staticmethod
    async def _warm(engine: Preloadable) -> None:
        await anyio.to_thread.run_sync(engine.warm, abandon_on_cancel=True)

    async def _speak(self, job: _Job) -> None:
        """Worker handler: speak one AgentText (or forward an AgentTurnDone) unless interrupted since."""
        if job.epoch != self._epoch:
            return
        frame = job.frame
        if isinstance(frame, AgentTurnDone):
            await self.push(frame)
            return
        ctx = self.ctx
        assert ctx is not None, "TTSProcessor.start was not called"
        timed = frame.turn_id != self._timed_turn
        self._timed_turn = frame.turn_id
        send, receive = anyio.create_memory_object_stream[_Item](math.inf)
        stop = threading.Event()
        failure: BaseException | None = None
        engine = self.synthesizer_for(frame.language)
        if not getattr(engine, "meters_usage", False):
            ctx.ledger.add_tts(engine.name, len(frame.text))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_run_producer, engine, frame.text, frame.language, send, stop)
                async with receive:
                    async for item in receive:
                        if isinstance(item, BaseException):
                            failure = item
                            break
                        if job.epoch != self._epoch:
                            break
                        pcm, sample_rate = item
                        self._turn.spoken(frame, len(pcm) / (2 * sample_rate))
                        now = time.monotonic()
                        if timed:
                            timed = False
                            ctx.ledger.time(Stage.TTS_FIRST_BYTE, now - job.arrived_at)
                        await self.push(OutputAudio(pcm, sample_rate, frame.turn_id, now))
                tg.cancel_scope.cancel()  # don't wait for an engine thread we no longer listen to
        finally:
            stop.set()  # the engine thread stops at its next chunk and closes the engine
        if failure is not None:
            raise failure
