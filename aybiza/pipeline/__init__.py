"""Frames and how they move; knows nothing of any provider."""

from __future__ import annotations

from .context import Announce, CallContext, CallLogger, Notice
from .frames import (
    DTMF,
    AgentResume,
    AgentSpeaking,
    AgentText,
    AgentTurnDone,
    EndOfCall,
    Frame,
    HeardSoFar,
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
from .ledger import CacheKind, CallLedger, IncidentKind, Stage, ToolUse, Usage
from .pipeline import Pipeline, check_wiring
from .processor import Processor
from .worker import Worker

__all__ = [
    "DTMF",
    "AgentResume",
    "AgentSpeaking",
    "AgentText",
    "Announce",
    "CacheKind",
    "CallLedger",
    "IncidentKind",
    "Notice",
    "Stage",
    "ToolUse",
    "Usage",
    "check_wiring",
    "AgentTurnDone",
    "CallContext",
    "CallLogger",
    "EndOfCall",
    "Frame",
    "InputAudio",
    "Interruption",
    "HeardSoFar",
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
