//! Ids from running nodes without an async runtime of your own: [`BlockingIdClient`].
//!
//! ```text
//! cargo run -p shardflake-client --example blocking_ids -- http://127.0.0.1:8080 [COUNT]
//! ```

use shardflake_client::{BlockingIdClient, IdClient};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let nodes = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let count: usize = args.next().map(|c| c.parse()).transpose()?.unwrap_or(10);
    let client = BlockingIdClient::build(IdClient::builder().nodes([nodes.as_str()]))?;
    let mut ids = client.stream();
    for _ in 0..count {
        println!("{}", ids.next_id()?);
    }
    Ok(())
}
