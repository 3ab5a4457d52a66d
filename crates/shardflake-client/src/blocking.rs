//! [`BlockingIdClient`]: the [`IdClient`] for code without an async runtime.
//!
//! As mini-redis's `blocking_client` does, it owns a small tokio runtime and blocks on the
//! async client's calls. The runtime has one worker thread, so the refill tasks keep
//! prefetching while the caller's thread does other work; the fast path of
//! [`BlockingIdStream`] does not enter the runtime at all.

use std::sync::Arc;

use tokio::runtime::Runtime;

use crate::ids::{IdClient, IdClientBuilder, IdError, IdStream, Namespace, StreamStats};

/// A blocking client of the id nodes. Create and drop it outside any async runtime (dropping
/// a runtime inside one panics).
///
/// ```no_run
/// use shardflake_client::{BlockingIdClient, IdClient};
/// let client = BlockingIdClient::build(IdClient::builder().nodes(["http://10.0.0.1:8080"]))?;
/// let id = client.next_id()?;
/// let mut fast = client.stream();
/// let next = fast.next_id()?;
/// assert_ne!(id, next);
/// # Ok::<(), shardflake_client::IdError>(())
/// ```
#[derive(Debug)]
pub struct BlockingIdClient {
    client: IdClient,
    runtime: Arc<Runtime>,
}

impl BlockingIdClient {
    /// Starts a runtime and builds the client from `builder` on it.
    pub fn build(builder: IdClientBuilder) -> Result<Self, IdError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shardflake-ids")
            .enable_all()
            .build()
            .map_err(|e| IdError::Config(format!("cannot start a tokio runtime: {e}")))?;
        let client = {
            let _guard = runtime.enter();
            builder.build()?
        };
        Ok(Self {
            client,
            runtime: Arc::new(runtime),
        })
    }

    /// [`IdClient::next_id`], blocking.
    pub fn next_id(&self) -> Result<u64, IdError> {
        self.runtime.block_on(self.client.next_id())
    }

    /// [`IdClient::next_ids`], blocking.
    pub fn next_ids(&self, n: usize) -> Result<Vec<u64>, IdError> {
        self.runtime.block_on(self.client.next_ids(n))
    }

    /// [`IdClient::ns`]: a blocking handle on a namespace.
    pub fn ns(&self, name: &str) -> Result<BlockingNamespace, IdError> {
        Ok(BlockingNamespace {
            ns: self.client.ns(name)?,
            runtime: self.runtime.clone(),
        })
    }

    /// [`IdClient::stream`]: the fast path, blocking only when the buffer is empty.
    pub fn stream(&self) -> BlockingIdStream {
        BlockingIdStream {
            stream: self.client.stream(),
            runtime: self.runtime.clone(),
        }
    }

    /// [`IdClient::stats`].
    pub fn stats(&self) -> StreamStats {
        self.client.stats()
    }

    /// The async client inside (its calls must run on [`BlockingIdClient`]'s runtime or
    /// another one).
    pub fn async_client(&self) -> &IdClient {
        &self.client
    }
}

/// A blocking [`Namespace`].
#[derive(Debug, Clone)]
pub struct BlockingNamespace {
    ns: Namespace,
    runtime: Arc<Runtime>,
}

impl BlockingNamespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        self.ns.name()
    }

    /// [`Namespace::next_id`], blocking.
    pub fn next_id(&self) -> Result<u64, IdError> {
        self.runtime.block_on(self.ns.next_id())
    }

    /// [`Namespace::next_ids`], blocking.
    pub fn next_ids(&self, n: usize) -> Result<Vec<u64>, IdError> {
        self.runtime.block_on(self.ns.next_ids(n))
    }

    /// [`Namespace::stream`], blocking only when the buffer is empty.
    pub fn stream(&self) -> BlockingIdStream {
        BlockingIdStream {
            stream: self.ns.stream(),
            runtime: self.runtime.clone(),
        }
    }

    /// [`Namespace::stats`].
    pub fn stats(&self) -> StreamStats {
        self.ns.stats()
    }
}

/// A blocking [`IdStream`].
#[derive(Debug)]
pub struct BlockingIdStream {
    stream: IdStream,
    runtime: Arc<Runtime>,
}

impl BlockingIdStream {
    /// [`IdStream::try_next_id`]: never blocks.
    #[inline]
    pub fn try_next_id(&mut self) -> Option<u64> {
        self.stream.try_next_id()
    }

    /// The next id: from the local chunk without entering the runtime, else waiting for a
    /// refill as [`IdStream::next_id`] does.
    #[inline]
    pub fn next_id(&mut self) -> Result<u64, IdError> {
        match self.stream.try_next_id() {
            Some(id) => Ok(id),
            None => self.runtime.block_on(self.stream.next_id()),
        }
    }
}
