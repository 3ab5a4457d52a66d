//! Ids from running nodes with the async [`IdClient`]: plain ids, a namespace, and the
//! fast-path stream, with the buffer's state after each.
//!
//! ```text
//! shardflake serve --port 8080 --machine-id 1 --state-dir /tmp/n1 &
//! shardflake serve --port 8081 --machine-id 2 --state-dir /tmp/n2 &
//! cargo run -p shardflake-client --example ids -- http://127.0.0.1:8080,http://127.0.0.1:8081 [NAMESPACE]
//! ```
//!
//! Kill one node while it runs: the ids keep coming from the other (a warning on stderr says
//! so once).

use std::time::{Duration, Instant};

use shardflake_client::IdClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "shardflake_client=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let nodes = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let namespace = args.next();
    let client = IdClient::builder()
        .nodes([nodes.as_str()])
        .prefetch(100, 20_000)
        .validity(Duration::from_secs(60))
        .build()?;

    println!("one id:      {}", client.next_id().await?);
    println!("five ids:    {:?}", client.next_ids(5).await?);
    if let Some(name) = namespace {
        let ns = client.ns(&name)?;
        println!("{name}:      {:?}", ns.next_ids(3).await?);
    }

    // The fast path: a million ids, refilled in the background ahead of need.
    let mut stream = client.stream();
    let start = Instant::now();
    let mut last = 0;
    for _ in 0..1_000_000 {
        last = stream.next_id().await?;
    }
    let took = start.elapsed();
    println!(
        "1,000,000 ids in {took:.2?} (last {last}); buffer now {:?}",
        client.stats()
    );
    Ok(())
}
