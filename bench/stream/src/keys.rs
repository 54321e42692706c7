//! Creates API keys for a run through Gatehouse's API (`POST /v1/orgs/{org}/api-keys` with a
//! person's access token), `chat:write` only, and writes them one a line. The keys get no
//! limits of their own: the server's defaults for every key are raised out of the load's
//! reach by the caller (`GATEHOUSE_RATE_LIMIT_API_KEY`, as `bench/run` does).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::load::split_url;
use crate::Args;

/// Keys created at once (each on its own connection).
const AT_ONCE: usize = 8;

pub async fn run(args: &Args) -> Result<(), String> {
    let base = args.str("url")?;
    let jwt = args.str("jwt")?;
    let org = args.str("org")?;
    let count: usize = args.num("count", 1000)?;
    let out = args.str("out")?;
    let (authority, prefix) = split_url(&base)?;
    let path = format!("{}/v1/orgs/{org}/api-keys", prefix.trim_end_matches('/'));
    let mut keys = Vec::with_capacity(count);
    let mut next = 0;
    while next < count {
        let batch: Vec<_> = (next..count.min(next + AT_ONCE))
            .map(|i| {
                let (authority, path, jwt) = (authority.clone(), path.clone(), jwt.clone());
                tokio::spawn(async move { create(&authority, &path, &jwt, i).await })
            })
            .collect();
        for h in batch {
            keys.push(h.await.map_err(|e| e.to_string())??);
        }
        next += AT_ONCE;
    }
    let mut f = tokio::fs::File::create(&out)
        .await
        .map_err(|e| format!("{out}: {e}"))?;
    f.write_all((keys.join("\n") + "\n").as_bytes())
        .await
        .map_err(|e| format!("{out}: {e}"))?;
    eprintln!("{count} keys written to {out}");
    Ok(())
}

/// `warm --url BASE --keys FILE`: `GET /v1/me` once with every key (each must answer 200), so
/// that the measured load finds them in the server's key cache rather than in storage.
pub async fn warm(args: &Args) -> Result<(), String> {
    let base = args.str("url")?;
    let file = args.str("keys")?;
    let keys: Vec<String> = std::fs::read_to_string(&file)
        .map_err(|e| format!("{file}: {e}"))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let (authority, prefix) = split_url(&base)?;
    let path = format!("{}/v1/me", prefix.trim_end_matches('/'));
    for chunk in keys.chunks(AT_ONCE) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|k| {
                let (authority, path, k) = (authority.clone(), path.clone(), k.clone());
                tokio::spawn(async move {
                    let req = Request::get(&path)
                        .header("host", &authority)
                        .header("x-api-key", &k)
                        .body(Full::new(Bytes::new()))
                        .map_err(|e| e.to_string())?;
                    let (status, body) = send(&authority, req).await?;
                    if status != 200 {
                        return Err(format!(
                            "GET /v1/me answered HTTP {status}: {}",
                            String::from_utf8_lossy(&body)
                                .chars()
                                .take(200)
                                .collect::<String>()
                        ));
                    }
                    Ok(())
                })
            })
            .collect();
        for h in batch {
            h.await.map_err(|e| e.to_string())??;
        }
    }
    eprintln!("{} keys checked once each", keys.len());
    Ok(())
}

/// One request on a connection of its own: the status and the whole body.
async fn send(authority: &str, req: Request<Full<Bytes>>) -> Result<(u16, Bytes), String> {
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes))
}

async fn create(authority: &str, path: &str, jwt: &str, i: usize) -> Result<String, String> {
    let body = serde_json::json!({ "name": format!("stream-{i}"), "scopes": ["chat:write"] });
    let req = Request::post(path)
        .header("host", authority)
        .header("authorization", format!("Bearer {jwt}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let (status, bytes) = send(authority, req).await?;
    if status != 201 {
        let text = String::from_utf8_lossy(&bytes);
        return Err(format!(
            "creating key {i} answered HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("key {i}: {e}"))?;
    doc["data"]["key"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("key {i}: no data.key in the answer"))
}
