//! Spreading the requests of one call over the servers: `max_in_flight` workers per URL, results
//! in request order, the first failure failing the call.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{OpenAiEngine, RemoteError};

impl OpenAiEngine {
    /// Runs `jobs` jobs over the servers: `max_in_flight` workers per URL, each taking the next
    /// job when free. Results in job order; the first failing job (in job order) fails the call,
    /// and no new job starts after a failure.
    pub(super) fn run_jobs<T, F>(&self, jobs: usize, job: F) -> Result<Vec<T>, RemoteError>
    where
        T: Send,
        F: Fn(usize, usize) -> Result<T, RemoteError> + Sync,
    {
        if jobs == 0 {
            return Ok(Vec::new());
        }
        let n_urls = self.urls.len();
        let workers = jobs.min(n_urls * self.max_in_flight);
        let start = self.rotate.fetch_add(1, Ordering::Relaxed);
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<T, RemoteError>>>> =
            Mutex::new((0..jobs).map(|_| None).collect());
        std::thread::scope(|s| {
            for w in 0..workers {
                let url = (start + w) % n_urls;
                let (next, failed, results, job) = (&next, &failed, &results, &job);
                s.spawn(move || loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= jobs {
                        break;
                    }
                    let r = job(url, j);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    results.lock().expect("results lock")[j] = Some(r);
                });
            }
        });
        let mut out = Vec::with_capacity(jobs);
        for r in results.into_inner().expect("results lock") {
            match r {
                Some(Ok(t)) => out.push(t),
                Some(Err(e)) => return Err(e),
                // Not started because another job failed; that error comes later in order.
                None => {}
            }
        }
        assert_eq!(out.len(), jobs, "jobs are skipped only after a failure");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use crate::remote::RemoteConfig;

    #[test]
    fn jobs_keep_their_order_and_the_first_error_wins() {
        let c = RemoteConfig {
            urls: vec!["http://a".into(), "http://b".into()],
            max_in_flight: 3,
            ..RemoteConfig::default()
        };
        let engine = OpenAiEngine::new(&c).unwrap();
        let in_flight = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let out = engine
            .run_jobs(40, |url, j| {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                in_flight.fetch_sub(1, Ordering::SeqCst);
                assert!(url < 2);
                Ok(j * 10)
            })
            .unwrap();
        assert_eq!(out, (0..40).map(|j| j * 10).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 6);
        let e = engine
            .run_jobs(10, |_, j| {
                if j >= 3 {
                    Err(RemoteError::Malformed {
                        url: format!("u{j}"),
                        message: "x".into(),
                    })
                } else {
                    Ok(j)
                }
            })
            .unwrap_err();
        assert!(e.to_string().starts_with("u3:"), "{e}");
    }
}
