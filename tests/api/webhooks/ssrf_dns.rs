//! DNS rebinding through real name resolution: a stub DNS server of the test's own
//! (`webhooks_dns_server`) answers a public address when the endpoint is created, then
//! 127.0.0.1, then a public and a private address together. No request reaches the receiver
//! on 127.0.0.1, and the delivery log says why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use gatehouse::config::Config;
use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::UdpSocket;

use super::{wait_for_log, Receiver};
use crate::helpers::{Db, TestApp};
use crate::story;

/// A public address (not one of the documentation ranges, which count as internal).
const PUBLIC: &str = "93.184.215.14";

/// A DNS server on a free UDP port that answers every name with the addresses it is given,
/// each family to its own query type, with TTL 0 so that nothing is cached.
struct StubDns {
    addr: SocketAddr,
    answers: Arc<Mutex<Vec<IpAddr>>>,
    asked: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StubDns {
    async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let answers: Arc<Mutex<Vec<IpAddr>>> = Arc::default();
        let asked: Arc<AtomicUsize> = Arc::default();
        let (a, n) = (answers.clone(), asked.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                n.fetch_add(1, Ordering::SeqCst);
                let mut reply = Message::new();
                reply
                    .set_id(query.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(query.op_code())
                    .set_recursion_desired(query.recursion_desired())
                    .set_recursion_available(true);
                let ips = a.lock().unwrap().clone();
                for q in query.queries() {
                    reply.add_query(q.clone());
                    for ip in &ips {
                        let rdata = match (ip, q.query_type()) {
                            (IpAddr::V4(v4), RecordType::A) => RData::A(A::from(*v4)),
                            (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA::from(*v6)),
                            _ => continue,
                        };
                        reply.add_answer(Record::from_rdata(q.name().clone(), 0, rdata));
                    }
                }
                let _ = socket.send_to(&reply.to_vec().unwrap(), from).await;
            }
        });
        StubDns {
            addr,
            answers,
            asked,
            task,
        }
    }

    fn answer(&self, ips: &[&str]) {
        *self.answers.lock().unwrap() = ips.iter().map(|ip| ip.parse().unwrap()).collect();
    }

    fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }
}

impl Drop for StubDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Internal targets refused, names resolved by `dns`, one attempt per delivery.
async fn with_dns(db: Db) -> (TestApp, StubDns) {
    let dns = StubDns::start().await;
    let server = dns.addr;
    let app = TestApp::spawn(db, move |c: &mut Config| {
        c.webhooks_allow_private = false;
        c.webhooks_dns_server = Some(server);
        c.webhooks_poll_interval_ms = 50;
        c.webhooks_retry_schedule = vec![0];
        c.webhooks_timeout_ms = 2000;
    })
    .await;
    (app, dns)
}

story!(
    a_name_that_rebinds_to_an_internal_address_is_never_delivered_to,
    setup: with_dns,
    |(app, dns): (TestApp, StubDns)| async move {
        let receiver = Receiver::start().await;
        let port = receiver.url.rsplit(':').next().unwrap().trim_end_matches("/hook");
        let url = format!("http://hooks.rebind.test:{port}/hook");
        let owner = app.person().await;
        let org = app.org(&owner, "Rebind").await;

        // At creation the name points to a public address: accepted.
        dns.answer(&[PUBLIC]);
        let (status, ep) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks"),
                &owner.token,
                Some(json!({"url": url})),
            )
            .await;
        assert_eq!(status, 201, "{ep}");
        let id = ep["data"]["id"].as_str().unwrap().to_string();
        assert!(dns.asked() > 0, "the stub server was not asked");

        // Then it points to the receiver on 127.0.0.1, then to a public and a private
        // address at once.
        let mut expected = 0;
        for answers in [vec!["127.0.0.1"], vec![PUBLIC, "127.0.0.1"]] {
            dns.answer(&answers);
            let asked = dns.asked();
            let (status, body) = app
                .call(
                    Method::POST,
                    &format!("/orgs/{org}/webhooks/{id}/test"),
                    &owner.token,
                    None,
                )
                .await;
            assert_eq!(status, 202, "{body}");
            expected += 1;
            let log = wait_for_log(&app, &owner.token, &org, &id, expected).await;
            let newest: &Value = &log[0];
            assert_eq!(newest["succeeded"], false, "{answers:?}: {newest}");
            assert_eq!(newest["status_code"], Value::Null, "{answers:?}: {newest}");
            let why = newest["response"].as_str().unwrap();
            assert!(
                why.contains("resolves to a private, loopback or link-local address"),
                "{answers:?}: {why}"
            );
            assert!(dns.asked() > asked, "the delivery did not resolve the name again");
            assert!(receiver.hits().is_empty(), "{answers:?} reached the receiver");
        }

        // Created now, the same name is refused outright.
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/orgs/{org}/webhooks"),
                &owner.token,
                Some(json!({"url": url})),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "validation_failed");
        assert!(body["error"]["details"]["fields"]["url"]
            .as_str()
            .unwrap()
            .contains("private"));
        assert!(receiver.hits().is_empty());
        app
    }
);
