//! Races the README settles: two owners removing each other at the same moment leave the
//! organization with exactly one owner (one 204, one 409 `conflict`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use reqwest::Method;

use crate::helpers::{refusal, Person, TestApp};
use crate::story;

/// Rounds of the race: enough that the two removals overlap in some of them.
const ROUNDS: usize = 6;

story!(
    two_owners_removing_each_other_at_once_leave_exactly_one_owner,
    |app: TestApp| async move {
        let mut raced = 0;
        for _ in 0..ROUNDS {
            let a = app.person().await;
            let org = app.org(&a, "Duel").await;
            let b = app.person().await;
            app.add(&a, &org, &b, "owner").await;

            let remove = |by: &Person, whom: &Person| {
                app.v1(
                    Method::DELETE,
                    &format!("/orgs/{org}/members/{}", whom.id),
                    &by.token,
                )
                .send()
            };
            let (ra, rb) = tokio::join!(remove(&a, &b), remove(&b, &a));
            let mut answers = Vec::new();
            for r in [ra, rb] {
                let r = r.unwrap();
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                answers.push((status, body));
            }
            let winners = answers.iter().filter(|(s, _)| *s == 204).count();
            assert_eq!(winners, 1, "exactly one removal succeeds: {answers:?}");
            let (status, body) = answers.iter().find(|(s, _)| *s != 204).unwrap();
            match status {
                // Both passed the access check: the second is refused as the last owner.
                409 => {
                    assert_eq!(body["error"]["code"], "conflict", "{body}");
                    assert!(
                        body["error"]["message"]
                            .as_str()
                            .unwrap()
                            .contains("last owner"),
                        "{body}"
                    );
                    raced += 1;
                }
                // The loser asked after it had been removed: no longer a member (the
                // organization and the member it names both still exist).
                403 => assert_eq!(
                    refusal(*status, body),
                    (403, "forbidden", "not_a_member"),
                    "{body}"
                ),
                other => panic!("unexpected {other}: {body}"),
            }

            // Whatever the order, one owner is left, and it is the winner.
            let winner = if answers[0].0 == 204 { &a } else { &b };
            let (status, members) = app
                .call(
                    Method::GET,
                    &format!("/orgs/{org}/members"),
                    &winner.token,
                    None,
                )
                .await;
            assert_eq!(status, 200, "{members}");
            let members = members["data"].as_array().unwrap();
            assert_eq!(members.len(), 1, "{members:?}");
            assert_eq!(members[0]["role"], "owner");
            assert_eq!(members[0]["user_id"], winner.id.as_str(), "{members:?}");
        }
        // The race was run, not only its sequential outcome.
        assert!(raced > 0, "no round overlapped in {ROUNDS}");
        app
    }
);
