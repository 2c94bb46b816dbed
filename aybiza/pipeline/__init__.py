"""Frames and how they move; knows nothing of any provider."""

from __future__ import annotations

from .context import CallContext, CallLogger
from .frames import (
    DTMF,
    AgentText,
    AgentTurnDone,
    EndOfCall,
    Frame,
    InputAudio,
    Interruption,
    LanguageChanged,
    OutputAudio,
    QualityReport,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    UserTurn,
)
from .pipeline import Pipeline
from .processor import Processor
from .worker import Worker

__all__ = [
    "DTMF",
    "AgentText",
    "AgentTurnDone",
    "CallContext",
    "CallLogger",
    "EndOfCall",
    "Frame",
    "InputAudio",
    "Interruption",
    "LanguageChanged",
    "OutputAudio",
    "Pipeline",
    "Processor",
    "QualityReport",
    "SpeechStarted",
    "SpeechStopped",
    "Transcript",
    "UserTurn",
    "Worker",
]
