// The browser demo: one WebRTC call to the agent, live events on the "events" data channel.
// Standard APIs only (getUserMedia, RTCPeerConnection, WebAudio), no libraries: Chromium and Firefox.
"use strict";

(() => {
  const RX_THRESHOLD_RMS = 0.01; // about -40 dBFS: agent speech, not codec noise
  const METER_INTERVAL_MS = 50;
  const ICE_GATHER_TIMEOUT_MS = 3000;

  const $ = (id) => document.getElementById(id);
  const config = readConfig();
  const agent = new URLSearchParams(location.search).get("agent");
  // A server with AYBIZA_BROWSER_CALLS=token is opened as /#token=...: the fragment never leaves the browser.
  const browserToken = new URLSearchParams(location.hash.slice(1)).get("token");

  let call = null; // the live session: {pc, channel, mic, audioContext, meterTimer}
  const stats = { rxActive: 0, rxByTurn: {}, playingTurn: null };
  const agentEntries = new Map(); // turn id -> <li> of the agent's reply
  const latencyRows = new Map(); // turn id -> <li>

  function readConfig() {
    try {
      return JSON.parse($("aybiza-config").textContent);
    } catch (error) {
      return { iceServers: [] };
    }
  }

  function setStatus(state, text) {
    const status = $("status");
    status.dataset.state = state;
    status.textContent = text || state;
  }

  function setTalking(talking) {
    const button = $("talk");
    button.textContent = talking ? "Hang up" : "Start talking";
    button.setAttribute("aria-pressed", String(talking));
  }

  function addEntry(who, text) {
    const item = document.createElement("li");
    item.className = who;
    const label = document.createElement("span");
    label.className = "who";
    label.textContent = who === "user" ? "You" : "Agent";
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    item.append(label, body);
    $("conversation").append(item);
    item.scrollIntoView({ block: "nearest" });
    return item;
  }

  function latencyRow(turnId) {
    let row = latencyRows.get(turnId);
    if (!row) {
      row = document.createElement("li");
      row.dataset.turn = String(turnId);
      row.textContent = `Turn ${turnId}: …`;
      $("latency").append(row);
      latencyRows.set(turnId, row);
    }
    return row;
  }

  // Events from the server (see aybiza/transports/webrtc_events.py).
  const handlers = {
    call(event) {
      $("call-id").textContent = `${event.call_id} (agent ${event.agent})`;
    },
    route(event) {
      $("route").textContent = `${event.region} · ${event.model_tier}`;
      $("quality").textContent = event.quality_tier;
      $("language").textContent = event.language;
    },
    transcript(event) {
      if (event.final) {
        $("interim").textContent = "";
        if (event.text.trim()) addEntry("user", event.text.trim());
      } else {
        $("interim").textContent = event.text;
      }
    },
    speech(event) {
      $("speaking").textContent = event.state === "started" ? "speaking" : "listening";
    },
    user_turn(event) {
      latencyRow(event.turn_id);
    },
    agent_text(event) {
      const entry = agentEntries.get(event.turn_id);
      if (entry) {
        const body = entry.querySelector(".text");
        body.textContent = `${body.textContent} ${event.text}`;
      } else {
        agentEntries.set(event.turn_id, addEntry("agent", event.text));
      }
    },
    agent_done() {},
    agent_audio(event) {
      if (event.state === "playing") stats.playingTurn = event.turn_id;
    },
    latency(event) {
      const row = latencyRow(event.turn_id);
      row.dataset.ms = String(event.voice_to_voice_ms);
      row.textContent = `Turn ${event.turn_id}: ${event.voice_to_voice_ms} ms`;
      const stages = Object.entries(event.stages || {})
        .map(([stage, ms]) => `${stage} ${ms} ms`).join(", ");
      if (stages) row.title = stages;
    },
    interruption() {
      stats.playingTurn = null;
    },
    quality(event) {
      $("quality").textContent = `${event.tier} (${event.score})`;
    },
    language(event) {
      $("language").textContent = event.language;
    },
    end(event) {
      setStatus("ended", `ended: ${event.reason}`);
    },
  };

  function onMessage(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (error) {
      return;
    }
    const handler = handlers[event.type];
    if (handler) handler(event);
  }

  // The energy of what we receive, so a person (or a test) can see that agent audio arrived.
  function startMeter(stream, audioContext) {
    const analyser = audioContext.createAnalyser();
    analyser.fftSize = 1024;
    audioContext.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    return setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const sample of samples) sum += sample * sample;
      const rms = Math.sqrt(sum / samples.length);
      const db = rms > 0 ? 20 * Math.log10(rms) : -Infinity;
      const energy = $("rx-energy");
      energy.dataset.rms = rms.toFixed(5);
      energy.textContent = `${Number.isFinite(db) ? db.toFixed(0) : "-∞"} dBFS`;
      $("rx-bar").style.width = `${Math.max(0, Math.min(100, (db + 60) * 100 / 60))}%`;
      if (rms >= RX_THRESHOLD_RMS) {
        stats.rxActive += 1;
        const turn = stats.playingTurn === null ? "none" : String(stats.playingTurn);
        stats.rxByTurn[turn] = (stats.rxByTurn[turn] || 0) + 1;
        const active = $("rx-active");
        active.dataset.count = String(stats.rxActive);
        active.dataset.byTurn = JSON.stringify(stats.rxByTurn);
        active.textContent = `${(stats.rxActive * METER_INTERVAL_MS / 1000).toFixed(1)} s`;
      }
    }, METER_INTERVAL_MS);
  }

  function gatheringComplete(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);
      function done() {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
      function check() {
        if (pc.iceGatheringState === "complete") done();
      }
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  async function start(session) {
    setTalking(true);
    setStatus("connecting", "asking for the microphone");
    const mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    session.mic = mic;
    if (call !== session) {
      for (const track of mic.getTracks()) track.stop(); // hung up while the browser asked
      return;
    }
    const audioContext = session.audioContext;
    const pc = new RTCPeerConnection({ iceServers: config.iceServers || [] });
    session.pc = pc;
    for (const track of mic.getAudioTracks()) pc.addTrack(track, mic);
    const channel = pc.createDataChannel("events", { ordered: true });
    session.channel = channel;
    channel.addEventListener("message", onMessage);

    pc.addEventListener("track", (event) => {
      const stream = event.streams[0] || new MediaStream([event.track]);
      // Chromium only feeds a remote stream to WebAudio while a media element plays it.
      $("remote-audio").srcObject = stream;
      $("remote-audio").play().catch(() => {});
      if (call === session && session.meterTimer === null) session.meterTimer = startMeter(stream, audioContext);
    });
    pc.addEventListener("connectionstatechange", () => {
      const state = pc.connectionState;
      if (state === "connected") setStatus("connected");
      else if (state === "failed") setStatus("failed", "connection failed");
      else if (state === "disconnected") setStatus("connecting", "reconnecting");
    });

    setStatus("connecting", "connecting");
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringComplete(pc);
    const body = { sdp: pc.localDescription.sdp, type: "offer", language: navigator.language || "en" };
    if (agent) body.agent = agent;
    const headers = { "Content-Type": "application/json" };
    if (browserToken) headers.Authorization = `Bearer ${browserToken}`;
    const response = await fetch("/webrtc/offer", { method: "POST", headers, body: JSON.stringify(body) });
    if (!response.ok) throw new Error(`${response.status}: ${(await response.text()).trim()}`);
    await pc.setRemoteDescription(await response.json());
  }

  function stop(reason) {
    if (!call) return;
    const { pc, channel, mic, audioContext, meterTimer } = call;
    call = null;
    if (channel && channel.readyState === "open") channel.send(JSON.stringify({ type: "hangup" }));
    if (meterTimer !== null) clearInterval(meterTimer);
    if (mic) for (const track of mic.getTracks()) track.stop();
    // Give the hang-up message a moment to leave before the connection goes.
    setTimeout(() => {
      if (pc) pc.close();
      audioContext.close();
    }, 200);
    setTalking(false);
    if ($("status").dataset.state !== "ended") setStatus("ended", reason || "ended");
  }

  $("talk").addEventListener("click", () => {
    if (call) {
      stop("hung up");
      return;
    }
    const AudioContextClass = window.AudioContext || window.webkitAudioContext;
    // Created on the click, so the browser lets it run.
    const session = { pc: null, channel: null, mic: null, audioContext: new AudioContextClass(), meterTimer: null };
    call = session;
    start(session).catch((error) => {
      if (call !== session) return; // hung up meanwhile: not a failure
      stop();
      setStatus("failed", `failed: ${error.message || error}`);
    });
  });
  window.addEventListener("pagehide", () => stop());
})();
