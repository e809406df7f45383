//! `pg-sandbox --port N`: serves the sandbox on 127.0.0.1 only.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut port: u16 = 4010;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let value = args.next().unwrap_or_default();
                port = match value.parse() {
                    Ok(p) => p,
                    Err(_) => {
                        eprintln!("pg-sandbox: --port needs a number, got {value:?}");
                        std::process::exit(2);
                    }
                };
            }
            "-h" | "--help" => {
                println!("usage: pg-sandbox [--port N]   (binds 127.0.0.1 only; default 4010)");
                return Ok(());
            }
            other => {
                eprintln!("pg-sandbox: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let sandbox = pg_sandbox::Sandbox::start(port).await?;
    println!("pg-sandbox listening on {}", sandbox.base_url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
