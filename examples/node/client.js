#!/usr/bin/env node
// A Stateward client in Node.js, built at run time from the repository's own
// .proto files with @grpc/grpc-js and @grpc/proto-loader (no generated code).
//
// It walks one agent through its lifecycle, saves and reads its state, starts
// a workflow run, follows the agent's events for a moment, lists its runs, and
// prints one JSON object per step (JSON Lines). The last line is
// {"ok": true, "summary": {...}}; any failure prints {"ok": false, ...} and
// exits with status 1.
//
//   node client.js [target] [agent_id]
//
// Environment: STATEWARD_TARGET (default 127.0.0.1:50051), STATEWARD_NAMESPACE
// (default "default"), STATEWARD_PROTOS (the folder holding stateward/v1/*.proto;
// default ../../protos from this file).
"use strict";

const crypto = require("node:crypto");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const target = process.argv[2] || process.env.STATEWARD_TARGET || "127.0.0.1:50051";
const agentId = process.argv[3] || `node-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
const namespace = process.env.STATEWARD_NAMESPACE || "default";
const protosRoot = path.resolve(process.env.STATEWARD_PROTOS || path.join(__dirname, "..", "..", "protos"));
const DEADLINE_MS = 10000;
// Every event of the walk up to the run's completion: the agent's creation, four
// transitions, the state write, then (live) run, task and step events.
const EVENTS_TO_READ = 12;

// -- loading the services from the protos ------------------------------------------

function loadServices() {
  const files = ["lifecycle", "state", "execution", "recovery"].map((name) =>
    path.join(protosRoot, "stateward", "v1", `${name}.proto`),
  );
  const definition = protoLoader.loadSync(files, {
    includeDirs: [protosRoot],
    keepCase: true, // field names exactly as in the protos (agent_id, not agentId)
    longs: String, // int64 sequences and versions stay exact
    enums: String, // "AGENT_STATUS_ACTIVE" rather than 3
    defaults: true,
    oneofs: true, // a oneof's set field is named in its group property
  });
  const v1 = grpc.loadPackageDefinition(definition).stateward.v1;
  const credentials = grpc.credentials.createInsecure();
  return {
    lifecycle: new v1.LifecycleService(target, credentials),
    state: new v1.StateService(target, credentials),
    execution: new v1.ExecutionService(target, credentials),
  };
}

// -- small helpers ---------------------------------------------------------------

function metadata() {
  const md = new grpc.Metadata();
  md.set("x-stateward-namespace", namespace);
  return md;
}

// One idempotency key per step of this run: resending a call with its key (a retry)
// returns the server's recorded answer instead of applying the call twice.
const RUN_KEY = crypto.randomUUID();
function requestId(step) {
  return `${RUN_KEY}-${step}`;
}

// A unary call as a promise.
function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + DEADLINE_MS);
    client[method](request, metadata(), { deadline }, (error, response) => {
      if (error) {
        error.rpc = method;
        reject(error);
      } else {
        resolve(response);
      }
    });
  });
}

function json(value) {
  return Buffer.from(JSON.stringify(value), "utf8");
}

function time(stamp) {
  if (!stamp) return null;
  return new Date(Number(stamp.seconds) * 1000 + Math.floor(stamp.nanos / 1e6)).toISOString();
}

function status(value, prefix) {
  return String(value).replace(prefix, "");
}

function print(step, fields) {
  process.stdout.write(JSON.stringify({ step, ...fields }) + "\n");
}

// Follows the agent's events from the start of the log (a replay, then live events) until
// `count` arrived, then cancels the stream.
function followEvents(execution, count) {
  return new Promise((resolve, reject) => {
    const events = [];
    const stream = execution.SubscribeEvents(
      { filter: { agent_id: agentId }, after_sequence: "0" },
      metadata(),
    );
    const timer = setTimeout(() => {
      stream.cancel();
      reject(new Error(`only ${events.length} of ${count} events arrived within ${DEADLINE_MS} ms`));
    }, DEADLINE_MS);
    stream.on("data", (message) => {
      if (message.item !== "event") return; // a keepalive
      const e = message.event;
      events.push({ sequence: e.sequence, type: e.type, time: time(e.create_time) });
      if (events.length === count) {
        clearTimeout(timer);
        stream.cancel(); // we have what we came for
        resolve(events);
      }
    });
    stream.on("error", (error) => {
      clearTimeout(timer);
      if (error.code === grpc.status.CANCELLED && events.length === count) return;
      reject(error);
    });
  });
}

// -- the walk --------------------------------------------------------------------

async function main() {
  const { lifecycle, state, execution } = loadServices();
  const summary = { target, namespace, agent_id: agentId, statuses: [] };

  const created = await call(lifecycle, "CreateAgent", {
    agent_id: agentId,
    type: "node-example",
    config_json: json({ language: "javascript", runtime: process.version }),
    labels: { client: "node" },
    request_id: requestId("create"),
  });
  summary.statuses.push(status(created.agent.status, "AGENT_STATUS_"));
  print("create_agent", { agent_id: created.agent.agent_id, status: summary.statuses[0] });

  for (const [method, name] of [
    ["InitializeAgent", "initialize"],
    ["ActivateAgent", "activate"],
    ["PauseAgent", "pause"],
    ["ResumeAgent", "resume"],
  ]) {
    const moved = await call(lifecycle, method, {
      agent_id: agentId,
      reason: `node client: ${name}`,
      request_id: requestId(name),
    });
    const now = status(moved.agent.status, "AGENT_STATUS_");
    summary.statuses.push(now);
    print(name, { status: now, transition_id: moved.transition.transition_id });
  }

  // JSON travels as text: the big integer survives although JavaScript numbers cannot hold it.
  const documentText = '{"step":1,"notes":["from node"],"big":9007199254740993}';
  const saved = await call(state, "SaveState", {
    agent_id: agentId,
    document_json: Buffer.from(documentText, "utf8"),
    request_id: requestId("save"),
  });
  const read = await call(state, "GetState", { agent_id: agentId });
  summary.state_version = read.state.version;
  summary.state_text = read.state.document_json.toString("utf8");
  print("save_and_get_state", {
    saved_version: saved.state.version,
    read_version: read.state.version,
    document_text: summary.state_text,
  });

  // Subscribe before the run starts: its events arrive live on the open stream.
  const following = followEvents(execution, EVENTS_TO_READ);

  const run = await call(execution, "StartWorkflowRun", {
    workflow_name: "node-demo",
    agent_id: agentId,
    input_json: json({ question: "what is 6 x 7?" }),
    labels: { client: "node" },
    request_id: requestId("run"),
  });
  const task = await call(execution, "StartTaskRun", {
    run_id: run.run.run_id,
    task_id: "multiply",
    agent_id: agentId,
    request_id: requestId("task"),
  });
  await call(execution, "AppendEvents", {
    events: [
      { type: "step_started", data_json: json({ step: "multiply" }), task_run_id: task.task_run.task_run_id },
      { type: "step_completed", data_json: json({ answer: 42 }), task_run_id: task.task_run.task_run_id },
    ],
    request_id: requestId("events"),
  });
  await call(execution, "CompleteTaskRun", {
    task_run_id: task.task_run.task_run_id,
    result_json: json({ answer: 42 }),
    request_id: requestId("task-done"),
  });
  const done = await call(execution, "CompleteWorkflowRun", {
    run_id: run.run.run_id,
    result_json: json({ answer: 42 }),
    request_id: requestId("run-done"),
  });
  summary.run_id = run.run.run_id;
  summary.run_status = status(done.run.status, "RUN_STATUS_");
  print("workflow_run", {
    run_id: summary.run_id,
    task_run_id: task.task_run.task_run_id,
    status: summary.run_status,
  });

  const events = await following;
  summary.events = events.map((e) => e.type);
  summary.event_sequences = events.map((e) => e.sequence);
  print("subscribe_events", { received: events.length, events });

  const runs = await call(execution, "ListWorkflowRuns", { agent_id: agentId, page_size: 10 });
  summary.runs = runs.runs.map((r) => ({ run_id: r.run_id, workflow: r.workflow_name, status: status(r.status, "RUN_STATUS_") }));
  print("list_runs", { runs: summary.runs });

  const ended = await call(lifecycle, "TerminateAgent", {
    agent_id: agentId,
    reason: "node client: done",
    request_id: requestId("terminate"),
  });
  summary.statuses.push(status(ended.agent.status, "AGENT_STATUS_"));
  const trail = await call(lifecycle, "ListTransitions", { agent_id: agentId });
  summary.transitions = trail.transitions.map((t) => status(t.to_status, "AGENT_STATUS_"));
  print("terminate", { status: summary.statuses.at(-1), transitions: summary.transitions });

  // A refused move is FAILED_PRECONDITION, with the current status in its details.
  try {
    await call(lifecycle, "ActivateAgent", { agent_id: agentId, request_id: requestId("refused") });
    throw new Error("activating a terminated agent was not refused");
  } catch (error) {
    if (error.code !== grpc.status.FAILED_PRECONDITION) throw error;
    summary.refused_code = "FAILED_PRECONDITION";
    print("refused_transition", { code: summary.refused_code, details: error.details });
  }

  for (const client of [lifecycle, state, execution]) client.close();
  process.stdout.write(JSON.stringify({ ok: true, summary }) + "\n");
}

main().catch((error) => {
  const failure = {
    ok: false,
    rpc: error.rpc || null,
    code: error.code !== undefined ? grpc.status[error.code] || error.code : null,
    message: error.details || error.message,
  };
  process.stdout.write(JSON.stringify(failure) + "\n");
  process.exitCode = 1;
  setTimeout(() => process.exit(1), 100); // open channels must not keep a failed run alive
});
