//! SIGINT and SIGTERM, installed before a subcommand announces that it is ready.
//!
//! A handler installed lazily (when the shutdown future is first polled) leaves a window after
//! the banner, the address file or the "Serving." line in which a SIGINT still has its default
//! action and kills the process, and in which a signal can be recorded before anyone listens
//! for it and so be lost. [`Shutdown::install`] registers both handlers at once; a signal that
//! arrives any time after it returns completes [`Shutdown::wait`].

use anyhow::{Context, Result};

/// Both stop signals, registered. Needs a tokio runtime (with I/O enabled) to be created.
pub struct Shutdown {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the SIGINT and SIGTERM handlers now. From here on neither signal kills the
    /// process; each completes [`Shutdown::wait`].
    pub fn install() -> Result<Shutdown> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Shutdown {
                int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
                term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Shutdown {})
        }
    }

    /// Completes on the first SIGINT or SIGTERM received since [`Shutdown::install`].
    pub async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {},
            _ = self.term.recv() => {},
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
