//! The node's side of the thumbnail workers: long-lived `streamgate thumbnail-worker`
//! subprocesses, each used by one job at a time, strictly one request then its answer.
//! A worker that misses the deadline, dies or answers garbage is killed and reaped, so
//! a late answer can never be taken for the next request's picture.

use parking_lot::Mutex;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::sandbox::{self, DecoderLimits};
use super::worker::{MAGIC, MAX_REQUEST};
use super::ThumbError;

/// Largest answer accepted from a worker.
const MAX_ANSWER: usize = 16 * 1024 * 1024;
/// CPU time a worker may use in its life (it is limited like every decoder); it is
/// retired after [`MAX_REQUESTS_PER_WORKER`] requests, long before it gets there
/// (a 720p thumbnail takes about 9 ms).
const WORKER_CPU_SECONDS: u64 = 600;
/// Requests a worker serves before it is replaced.
const MAX_REQUESTS_PER_WORKER: u32 = 10_000;

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Requests served so far.
    served: u32,
}

impl Worker {
    /// One request/answer exchange. `Ok(Err(text))` is a decoding failure the worker
    /// reported (it stays usable); `Err` means the worker is broken.
    async fn exchange(
        &mut self,
        annexb: &[u8],
        width: u16,
        quality: u8,
    ) -> std::io::Result<Result<Vec<u8>, String>> {
        let mut head = Vec::with_capacity(11);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&((annexb.len() + 3) as u32).to_be_bytes());
        head.extend_from_slice(&width.to_be_bytes());
        head.push(quality);
        self.stdin.write_all(&head).await?;
        self.stdin.write_all(annexb).await?;
        self.stdin.flush().await?;
        let status = self.stdout.read_u8().await?;
        let len = self.stdout.read_u32().await? as usize;
        if status > 1 || len > MAX_ANSWER {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "malformed worker answer",
            ));
        }
        let mut payload = vec![0u8; len];
        self.stdout.read_exact(&mut payload).await?;
        Ok(if status == 0 {
            Ok(payload)
        } else {
            Err(String::from_utf8_lossy(&payload).into_owned())
        })
    }
}

/// Idle workers, started on demand. The scheduler's semaphore bounds how many jobs
/// (and so workers) run at once.
pub struct WorkerPool {
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
    idle: Mutex<Vec<Worker>>,
}

impl WorkerPool {
    /// Workers run `program args...`; `streamgate thumbnail-worker` in production.
    pub fn new(program: PathBuf, args: Vec<String>, timeout: Duration) -> Self {
        Self {
            program,
            args,
            timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A pool of this very binary's workers, each under `memory_mib` of address space
    /// (see [`sandbox`]).
    pub fn of_current_exe(timeout: Duration, memory_mib: u64) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let limits = DecoderLimits {
            memory_mib,
            cpu_seconds: WORKER_CPU_SECONDS,
        };
        let args = vec![
            "run-limited".into(),
            "--memory-mib".into(),
            limits.memory_mib.to_string(),
            "--cpu-seconds".into(),
            limits.cpu_seconds.to_string(),
            "--".into(),
            exe.display().to_string(),
            "thumbnail-worker".into(),
        ];
        Ok(Self::new(exe, args, timeout))
    }

    fn spawn(&self) -> Result<Worker, ThumbError> {
        let mut command = Command::new(&self.program);
        sandbox::clear_environment(&mut command);
        let mut child = command
            .args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Each request allocates (and frees) a decoder's frame buffers: keep freed
            // memory mapped instead of returning it to the kernel after every
            // thumbnail (page faults were a quarter of the worker's time).
            .env(
                "GLIBC_TUNABLES",
                "glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=134217728",
            )
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ThumbError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        Ok(Worker {
            stdin: child.stdin.take().expect("piped"),
            stdout: BufReader::new(child.stdout.take().expect("piped")),
            child,
            served: 0,
        })
    }

    /// Decodes one H.264 keyframe (Annex B) into a JPEG.
    pub async fn h264_to_jpeg(
        &self,
        annexb: &[u8],
        width: u32,
        quality: u8,
    ) -> Result<Vec<u8>, ThumbError> {
        if annexb.len() + 3 > MAX_REQUEST {
            return Err(ThumbError::Decode(
                "keyframe too large for a thumbnail".into(),
            ));
        }
        let idle = self.idle.lock().pop();
        let mut worker = match idle {
            Some(w) => w,
            None => self.spawn()?,
        };
        let width = width.min(u16::MAX as u32) as u16;
        match tokio::time::timeout(self.timeout, worker.exchange(annexb, width, quality)).await {
            Ok(Ok(answer)) => {
                worker.served += 1;
                if worker.served < MAX_REQUESTS_PER_WORKER {
                    self.idle.lock().push(worker);
                }
                answer.map_err(ThumbError::Decode)
            }
            Ok(Err(e)) => {
                let _ = worker.child.kill().await;
                Err(ThumbError::WorkerDied(e.to_string()))
            }
            Err(_) => {
                // Kill and reap: a late answer must never reach the next request.
                let _ = worker.child.kill().await;
                Err(ThumbError::Timeout(self.timeout))
            }
        }
    }

    /// Workers currently idle (for tests).
    pub fn idle_workers(&self) -> usize {
        self.idle.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hanging_worker_is_killed_and_reaped_at_the_deadline() {
        let dir = std::env::temp_dir().join(format!("sg-pool-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("pid");
        let pool = WorkerPool::new(
            "/bin/sh".into(),
            vec![
                "-c".into(),
                format!("echo $$ > {}; exec sleep 30", pid_file.display()),
            ],
            Duration::from_millis(500),
        );
        let err = pool
            .h264_to_jpeg(&[0, 0, 0, 1, 0x65], 640, 80)
            .await
            .unwrap_err();
        assert!(matches!(err, ThumbError::Timeout(_)), "{err}");
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_string();
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} reaped"
        );
        assert_eq!(pool.idle_workers(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_worker_that_dies_is_replaced() {
        let pool = WorkerPool::new(
            "/bin/sh".into(),
            vec!["-c".into(), "exit 3".into()],
            Duration::from_secs(5),
        );
        for _ in 0..2 {
            let err = pool
                .h264_to_jpeg(&[0, 0, 0, 1, 0x65], 640, 80)
                .await
                .unwrap_err();
            assert!(matches!(err, ThumbError::WorkerDied(_)), "{err}");
        }
        assert_eq!(pool.idle_workers(), 0);
    }
}
