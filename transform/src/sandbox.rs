//! Transforms in worker processes, under limits the gateway enforces itself.
//!
//! The engine's own limits are cooperative: one built-in call over a huge sequence runs to its
//! end before the time check sees the deadline, and memory is not bounded at all. So the
//! gateway evaluates transforms in a pool of worker processes (`hookstream-transform-worker`,
//! [`worker_main`]), each of which caps its own address space before every evaluation at what
//! it holds plus the memory limit (an allocation past it fails and the process aborts), and
//! the gateway kills a worker that has not answered within the time limit. A worker that dies
//! is replaced; the evaluation that killed it fails with the limit it hit. At most as many
//! evaluations run at once as there are workers.
//!
//! Worker and gateway speak length-prefixed JSON over the worker's stdin and stdout: a
//! [`Request`] (the input and the stages, each an expression with its bindings: the output
//! of a stage is the input of the next) and a [`Reply`]. Workers cache compiled expressions
//! by their text.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use crate::{Expression, Limits};

/// The worker program's file name; the gateway looks for it beside its own executable.
pub const WORKER_PROGRAM: &str = "hookstream-transform-worker";
/// Time a worker gets beyond the time limit to answer: reading the request, writing the
/// reply, being scheduled on a busy machine.
const GRACE: Duration = Duration::from_millis(50);
/// More time per MiB of request, for reading and parsing large inputs.
const PER_MIB: Duration = Duration::from_millis(10);
/// Compiled expressions a worker keeps.
const CACHED_EXPRESSIONS: usize = 256;
/// Bytes of a worker's stderr kept to say why it died.
const STDERR_KEPT: usize = 4096;
/// Largest frame a worker reads (a request is at most the gateway's largest body, as JSON).
const MAX_FRAME: usize = 256 * 1024 * 1024;

/// One step of a transform: an expression and the variables bound for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stage {
    /// The expression's text (compiled, and cached, by the worker).
    pub expression: String,
    /// `$name` bindings.
    pub bindings: Vec<(String, Value)>,
}

/// What a worker is asked.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    input: Value,
    stages: Vec<Stage>,
    timeout_ms: u64,
    max_depth: usize,
}

/// What a worker answers.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    /// The last stage's value, or nothing when a stage yielded nothing.
    Value(Option<Value>),
    /// A stage failed with an engine error.
    Failed {
        stage: usize,
        category: String,
        message: String,
    },
}

/// Limits of the sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Memory one evaluation may take beyond the worker's own (default 64 MiB).
    pub memory_bytes: u64,
    /// Time one evaluation may take (default 100 ms).
    pub timeout: Duration,
    /// Nesting depth (the engine's cooperative limit).
    pub max_depth: usize,
    /// Worker processes, and so evaluations at once.
    pub workers: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_millis(100),
            max_depth: Limits::default().max_depth,
            workers: 2,
        }
    }
}

/// Why an evaluation in the sandbox failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The engine reported an error in stage `stage` (0-based).
    #[error("{message}")]
    Eval {
        /// The stage that failed.
        stage: usize,
        /// The engine's category (`timeout`, `depth`, `error`, ...).
        category: String,
        /// The engine's message.
        message: String,
    },
    /// The worker did not answer within the time limit and was stopped.
    #[error("the transform exceeded its time limit ({} ms) and was stopped", .0.as_millis())]
    TimeLimit(Duration),
    /// The worker ran out of its memory limit.
    #[error("the transform exceeded its memory limit ({} MiB) and was stopped", .0 / (1024 * 1024))]
    MemoryLimit(u64),
    /// The worker died another way (a crash of the engine).
    #[error("the transform crashed its worker process ({0})")]
    Crashed(String),
    /// No worker could be started.
    #[error("transform workers are unavailable: {0}")]
    Unavailable(String),
}

impl SandboxError {
    /// A short, stable label for metrics: `time_limit`, `memory_limit`, `crashed`,
    /// `unavailable`, or the engine's category.
    pub fn category(&self) -> &str {
        match self {
            SandboxError::Eval { category, .. } if category == "timeout" => "time_limit",
            SandboxError::Eval { category, .. } => category,
            SandboxError::TimeLimit(_) => "time_limit",
            SandboxError::MemoryLimit(_) => "memory_limit",
            SandboxError::Crashed(_) => "crashed",
            SandboxError::Unavailable(_) => "unavailable",
        }
    }
}

/// A running worker process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

/// The pool of worker processes.
pub struct Sandbox {
    program: PathBuf,
    limits: SandboxLimits,
    idle: Mutex<Vec<Worker>>,
    permits: Semaphore,
}

impl Sandbox {
    /// A pool running `program` (see [`worker_program`]); workers start when first needed.
    pub fn new(program: PathBuf, limits: SandboxLimits) -> Arc<Sandbox> {
        Arc::new(Sandbox {
            program,
            limits,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(limits.workers.max(1)),
        })
    }

    /// The limits evaluations run under.
    pub fn limits(&self) -> SandboxLimits {
        self.limits
    }

    /// Starts a worker now and evaluates a trivial expression in it: checks that the worker
    /// program runs, and the first delivery does not wait for a process to start.
    pub async fn warm_up(&self) -> Result<(), SandboxError> {
        let probe = Stage {
            expression: "1 + 1".to_owned(),
            bindings: Vec::new(),
        };
        match self.evaluate(Value::Null, vec![probe]).await? {
            Some(v) if v == serde_json::json!(2) => Ok(()),
            other => Err(SandboxError::Unavailable(format!(
                "the worker answered {other:?} to 1 + 1"
            ))),
        }
    }

    /// Runs `stages` on `input` in a worker. `Ok(None)`: a stage yielded nothing.
    pub async fn evaluate(
        &self,
        input: Value,
        stages: Vec<Stage>,
    ) -> Result<Option<Value>, SandboxError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| SandboxError::Unavailable("the sandbox is closed".to_owned()))?;
        let request = Request {
            input,
            stages,
            timeout_ms: u64::try_from(self.limits.timeout.as_millis()).unwrap_or(u64::MAX),
            max_depth: self.limits.max_depth,
        };
        let frame = serde_json::to_vec(&request)
            .map_err(|e| SandboxError::Unavailable(format!("cannot encode the request: {e}")))?;
        drop(request);
        let idle = self.lock_idle().pop();
        let mut worker = match idle {
            Some(w) => w,
            None => self.spawn()?,
        };
        let mib = u32::try_from(frame.len() / (1024 * 1024)).unwrap_or(u32::MAX);
        let deadline = self.limits.timeout + GRACE + PER_MIB * mib;
        match tokio::time::timeout(deadline, worker.call(&frame)).await {
            Ok(Ok(reply)) => {
                self.lock_idle().push(worker);
                match reply {
                    Reply::Value(v) => Ok(v),
                    // The engine's own clock stopped it first: the same limit.
                    Reply::Failed { category, .. } if category == "timeout" => {
                        Err(SandboxError::TimeLimit(self.limits.timeout))
                    }
                    Reply::Failed {
                        stage,
                        category,
                        message,
                    } => Err(SandboxError::Eval {
                        stage,
                        category,
                        message,
                    }),
                }
            }
            Ok(Err(_)) => Err(self.why_dead(worker).await),
            Err(_) => {
                let _ = worker.child.kill().await;
                Err(SandboxError::TimeLimit(self.limits.timeout))
            }
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Worker>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn(&self) -> Result<Worker, SandboxError> {
        let mut child = Command::new(&self.program)
            .arg("--memory-bytes")
            .arg(self.limits.memory_bytes.to_string())
            // What the worker says when it dies must fit what is kept of it.
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                SandboxError::Unavailable(format!("cannot start {}: {e}", self.program.display()))
            })?;
        let missing = || SandboxError::Unavailable("worker pipes missing".to_owned());
        let stdin = child.stdin.take().ok_or_else(missing)?;
        let stdout = BufReader::new(child.stdout.take().ok_or_else(missing)?);
        let mut stderr_pipe = child.stderr.take().ok_or_else(missing)?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let kept = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stderr_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                // The first words of a death are the telling ones.
                let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        });
        Ok(Worker {
            child,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Why a worker stopped answering: it ran out of memory, or crashed.
    async fn why_dead(&self, mut worker: Worker) -> SandboxError {
        let status = tokio::time::timeout(Duration::from_secs(2), worker.child.wait()).await;
        // Let the stderr reader catch up with what the worker wrote before it died.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let said =
            String::from_utf8_lossy(&worker.stderr.lock().unwrap_or_else(|p| p.into_inner()))
                .into_owned();
        if said.contains("memory allocation of") {
            return SandboxError::MemoryLimit(self.limits.memory_bytes);
        }
        if said.contains("overflowed its stack") {
            return SandboxError::Crashed("stack overflow".to_owned());
        }
        match status {
            Ok(Ok(s)) => SandboxError::Crashed(describe_exit(s)),
            _ => {
                let _ = worker.child.kill().await;
                SandboxError::Crashed("it stopped answering".to_owned())
            }
        }
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

impl Worker {
    async fn call(&mut self, frame: &[u8]) -> std::io::Result<Reply> {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let len =
            u32::try_from(frame.len()).map_err(|_| std::io::Error::other("request too large"))?;
        self.stdin.write_all(&len.to_le_bytes()).await?;
        self.stdin.write_all(frame).await?;
        self.stdin.flush().await?;
        let mut head = [0u8; 4];
        self.stdout.read_exact(&mut head).await?;
        let len = u32::from_le_bytes(head) as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::other("reply too large"));
        }
        let mut body = vec![0u8; len];
        self.stdout.read_exact(&mut body).await?;
        serde_json::from_slice(&body).map_err(std::io::Error::other)
    }
}

/// Where the worker program is: beside `executable` (the gateway's own).
pub fn worker_program(executable: &std::path::Path) -> PathBuf {
    executable.with_file_name(WORKER_PROGRAM)
}

// ---- the worker process ----------------------------------------------------------------

/// The worker program: evaluates requests from stdin until stdin closes. Before each
/// evaluation it caps its address space at its current size plus `--memory-bytes`.
pub fn worker_main() -> ExitCode {
    let memory = std::env::args()
        .skip_while(|a| a != "--memory-bytes")
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(SandboxLimits::default().memory_bytes);
    // Panics inside the engine are caught and answered as errors; stderr is kept for the
    // words of a process that dies.
    std::panic::set_hook(Box::new(|_| {}));
    // A worker stopped at its memory cap aborts: no core file for that.
    let _ = rlimit::setrlimit(rlimit::Resource::CORE, 0, 0);
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut cache: HashMap<String, Expression> = HashMap::new();
    let start_size = vm_size().unwrap_or(0);
    loop {
        let frame = match read_frame(&mut input) {
            Ok(Some(f)) => f,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hookstream-transform-worker: cannot read a request: {e}");
                return ExitCode::FAILURE;
            }
        };
        let request: Request = match serde_json::from_slice(&frame) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("hookstream-transform-worker: malformed request: {e}");
                return ExitCode::FAILURE;
            }
        };
        drop(frame);
        if let Some(size) = vm_size() {
            // Only this evaluation's own allocations count against the cap.
            let _ = rlimit::setrlimit(rlimit::Resource::AS, size + memory, rlimit::INFINITY);
        }
        let reply = run(&request, &mut cache);
        drop(request);
        let written = serde_json::to_vec(&reply)
            .map_err(std::io::Error::other)
            .and_then(|body| write_frame(&mut output, &body));
        let _ = rlimit::setrlimit(rlimit::Resource::AS, rlimit::INFINITY, rlimit::INFINITY);
        if let Err(e) = written {
            eprintln!("hookstream-transform-worker: cannot write a reply: {e}");
            return ExitCode::FAILURE;
        }
        // Memory kept from earlier evaluations would widen the next one's room: a worker
        // that grew is replaced by a fresh one.
        if vm_size().is_some_and(|s| s > start_size + 2 * memory) {
            return ExitCode::SUCCESS;
        }
    }
}

/// Runs the stages of `request`.
fn run(request: &Request, cache: &mut HashMap<String, Expression>) -> Reply {
    let limits = Limits {
        timeout: Duration::from_millis(request.timeout_ms),
        max_depth: request.max_depth,
    };
    let mut value = request.input.clone();
    for (i, stage) in request.stages.iter().enumerate() {
        if cache.len() >= CACHED_EXPRESSIONS && !cache.contains_key(&stage.expression) {
            cache.clear();
        }
        let expression = match cache.get(&stage.expression) {
            Some(e) => e.clone(),
            None => match Expression::compile(&stage.expression) {
                Ok(e) => {
                    cache.insert(stage.expression.clone(), e.clone());
                    e
                }
                Err(e) => {
                    return Reply::Failed {
                        stage: i,
                        category: "compile".to_owned(),
                        message: e.to_string(),
                    }
                }
            },
        };
        let bindings: Vec<(&str, &Value)> = stage
            .bindings
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        match expression.evaluate(&value, &bindings, &limits) {
            Ok(Some(v)) => value = v,
            Ok(None) => return Reply::Value(None),
            Err(e) => {
                return Reply::Failed {
                    stage: i,
                    category: e.category().to_owned(),
                    message: e.to_string(),
                }
            }
        }
    }
    Reply::Value(Some(value))
}

/// The process's address-space size, from `/proc/self/status`.
fn vm_size() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn read_frame(input: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = [0u8; 4];
    match input.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other("request too large"));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    Ok(Some(body))
}

fn write_frame(output: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("reply too large"))?;
    output.write_all(&len.to_le_bytes())?;
    output.write_all(body)?;
    output.flush()
}
