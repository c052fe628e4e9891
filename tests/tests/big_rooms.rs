//! End-to-end tests of big rooms: `joined` carries the member count and a
//! bounded first page, and `members` pages through the rest, each member
//! exactly once, on one node (memory) and across two nodes over a real Redis.

use std::collections::BTreeSet;

use palaver_protocol::{ErrorCode, PresenceState, ServerFrame, limits::PRESENCE_BATCH_NAMES};
use palaver_tests::{Node, RedisServer, WsClient, cluster};
use serde_json::json;

/// Members joined before the observer: more than one `joined` page.
const MEMBERS: usize = 250;
/// The first page's bound (`limits::JOINED_MEMBERS`).
const FIRST_PAGE: usize = 100;
/// Nodes' flags: members that do not read must not be evicted for the
/// presence events the join storm queues to them.
const QUEUE: [&str; 2] = ["--queue-frames", "4096"];

/// Connects `count` members, round-robin over `nodes`, each joined to `room`.
async fn fill(nodes: &[Node], room: &str, count: usize) -> Vec<WsClient> {
    let mut members = Vec::with_capacity(count);
    for i in 0..count {
        let mut c = WsClient::connect(&nodes[i % nodes.len()].ws_url(&format!("m{i:03}"))).await;
        c.join(room).await;
        members.push(c);
    }
    members
}

/// The `joined` fields this test is about: members, member_count, members_more.
fn roster(frame: &ServerFrame) -> (Vec<String>, u64, bool) {
    match frame {
        ServerFrame::Joined { members, member_count, members_more, .. } => {
            (members.iter().map(|m| m.to_string()).collect(), *member_count, *members_more)
        }
        other => panic!("expected joined, got {other:?}"),
    }
}

/// One `members` reply: its users and `more`.
async fn page(c: &mut WsClient, request: serde_json::Value) -> (Vec<String>, bool) {
    c.send_json(request).await;
    match c.expect(|f| matches!(f, ServerFrame::Members { .. } | ServerFrame::Error { .. })).await {
        ServerFrame::Members { members, more, .. } => {
            (members.iter().map(|m| m.to_string()).collect(), more)
        }
        other => panic!("expected members, got {other:?}"),
    }
}

/// Reads every member of `room` with `members` requests of `limit` users.
async fn page_through(c: &mut WsClient, room: &str, limit: usize) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    loop {
        let mut request = json!({"type":"members","room":room,"limit":limit});
        if let Some(last) = all.last() {
            request["after"] = json!(last);
        }
        let (users, more) = page(c, request).await;
        assert!(users.len() <= limit, "a page holds at most its limit");
        assert!(!users.is_empty() || !more, "an empty page ends the list");
        all.extend(users);
        if !more {
            return all;
        }
    }
}

/// Joins an observer to a room of [`MEMBERS`] and checks the first page, the
/// count and that paging yields every member exactly once, in order.
/// Returns the observer, still a member.
async fn check_big_room(observer_node: &Node, room: &str) -> WsClient {
    let mut observer = WsClient::connect(&observer_node.ws_url("viewer")).await;
    let (first, count, more) = roster(&observer.join(room).await);
    let mut expected: Vec<String> = (0..MEMBERS).map(|i| format!("m{i:03}")).collect();
    expected.push("viewer".into());
    expected.sort();
    assert_eq!(count, expected.len() as u64, "member_count is cluster-wide");
    assert!(more, "the first page is cut");
    assert_eq!(first, expected[..FIRST_PAGE], "the first page is the first names, sorted");

    for limit in [77, 1000] {
        let all = page_through(&mut observer, room, limit).await;
        let distinct: BTreeSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "no member twice (limit {limit})");
        assert_eq!(all, expected, "every member, in order (limit {limit})");
    }
    // Paging on from the first page's last name continues where it stopped.
    let after = first.last().expect("a first page").clone();
    let request = json!({"type":"members","room":room,"after":after,"limit":5});
    let (next, more) = page(&mut observer, request).await;
    assert_eq!(next, expected[FIRST_PAGE..FIRST_PAGE + 5]);
    assert!(more);
    observer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_room_joins_with_a_count_and_pages_on_one_node() {
    let node = Node::start(&QUEUE);
    let _members = fill(std::slice::from_ref(&node), "big", MEMBERS).await;
    let _viewer = check_big_room(&node, "big").await;

    // A small room still lists everyone in `joined`, as before.
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    ann.join("small").await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    assert_eq!(roster(&bob.join("small").await), (vec!["ann".into(), "bob".into()], 2, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_room_counts_and_pages_across_two_nodes() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 2, &QUEUE);
    let mut members = fill(&nodes, "big", MEMBERS).await;
    let mut viewer = check_big_room(&nodes[1], "big").await;

    // A member who leaves is gone from the pages on both nodes.
    members.swap_remove(0).close().await;
    // A room this big gets presence in batches.
    viewer
        .expect(|f| match f {
            ServerFrame::Presence { user, state: PresenceState::Leave, .. } => {
                user.as_str() == "m000"
            }
            ServerFrame::PresenceBatch { left, .. } => left.iter().any(|u| u.as_str() == "m000"),
            _ => false,
        })
        .await;
    let mut late = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut c = WsClient::connect(&node.ws_url(&format!("zlate{i}"))).await;
        let (first, count, _) = roster(&c.join("big").await);
        // m000 left; the viewer and i + 1 late members joined.
        assert_eq!(count, (MEMBERS + 1 + i) as u64, "on {}", node.id);
        assert_eq!(first.first().map(String::as_str), Some("m001"));
        let all = page_through(&mut c, "big", 1000).await;
        assert!(!all.contains(&"m000".to_owned()), "on {}", node.id);
        assert_eq!(all.len(), MEMBERS + 1 + i, "on {}", node.id);
        late.push(c);
    }
}

#[tokio::test]
async fn members_requests_are_validated() {
    let node =
        Node::start(&["--jwt-secret", "big-rooms-test-secret", "--private-rooms", "staff-*"]);
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    ann.join("lobby").await;
    let refused = [
        (json!({"type":"members","room":"lobby","limit":0}), ErrorCode::InvalidField),
        (json!({"type":"members","room":"lobby","limit":1001}), ErrorCode::InvalidField),
        (json!({"type":"members","room":"lobby","after":12}), ErrorCode::InvalidField),
        (json!({"type":"members","room":"lobby","after":"a<b"}), ErrorCode::InvalidField),
        (json!({"type":"members"}), ErrorCode::MissingField),
        (json!({"type":"members","room":"a b"}), ErrorCode::InvalidRoom),
        (json!({"type":"members","room":"elsewhere"}), ErrorCode::NotJoined),
        // A private room is refused before its fields are judged.
        (json!({"type":"members","room":"staff-x"}), ErrorCode::Forbidden),
        (json!({"type":"members","room":"staff-x","limit":0}), ErrorCode::Forbidden),
    ];
    for (request, want) in refused {
        ann.send_json(request.clone()).await;
        match ann.expect(|f| matches!(f, ServerFrame::Error { .. })).await {
            ServerFrame::Error { code, reference, .. } => {
                assert_eq!(code, want, "{request}");
                assert_eq!(reference.as_deref(), Some("members"), "{request}");
            }
            _ => unreachable!(),
        }
    }
    // The connection is still good for a valid request.
    let (users, more) = page(&mut ann, json!({"type":"members","room":"lobby"})).await;
    assert_eq!((users, more), (vec!["~ann".to_owned()], false));
}

/// Reads presence until a `presence_batch` counts `count` members; returns
/// every name listed as joined (one by one while the room was small, then in
/// batches) and whether any batch said `truncated`.
async fn batches_until(c: &mut WsClient, count: u64) -> (BTreeSet<String>, bool) {
    let mut joined = BTreeSet::new();
    let mut truncated = false;
    loop {
        let frame = c
            .expect(|f| {
                matches!(f, ServerFrame::PresenceBatch { .. } | ServerFrame::Presence { .. })
            })
            .await;
        match frame {
            ServerFrame::Presence { user, state: PresenceState::Join, .. } => {
                joined.insert(user.to_string());
            }
            ServerFrame::PresenceBatch {
                joined: j,
                left,
                typing,
                member_count,
                truncated: t,
                ..
            } => {
                for list in [&j, &left, &typing] {
                    assert!(list.len() <= PRESENCE_BATCH_NAMES, "a batch list is bounded");
                }
                joined.extend(j.iter().map(|u| u.to_string()));
                truncated |= t;
                if member_count == count {
                    return (joined, truncated);
                }
                assert!(member_count < count, "member_count {member_count} above {count}");
            }
            _ => {}
        }
    }
}

/// A join storm in a big room reaches an observer as bounded batches with
/// the cluster-wide count, never as one `presence` per join; a batch that
/// could not list every joiner says so.
async fn check_batched_storm(nodes: &[Node], observer_node: &Node) {
    let mut observer = WsClient::connect(&observer_node.ws_url("viewer")).await;
    observer.join("storm").await;
    let _members = fill(nodes, "storm", MEMBERS).await;
    let (listed, truncated) = batches_until(&mut observer, MEMBERS as u64 + 1).await;
    assert!(
        listed.len() == MEMBERS || truncated,
        "{} of {MEMBERS} joiners listed and no batch said truncated",
        listed.len()
    );
    // Besides the joiners, the observer may hear its own join (across nodes
    // the bus delivers it after `joined`); nobody else is in the room.
    assert!(listed.iter().all(|u| u.starts_with('m') || u == "viewer"), "{listed:?}");
    let late = {
        let mut c = WsClient::connect(&nodes[0].ws_url("zz-late")).await;
        c.join("storm").await;
        c
    };
    let (listed, _) = batches_until(&mut observer, MEMBERS as u64 + 2).await;
    assert!(listed.contains("zz-late"), "a single join arrives in the next batch");
    drop(late);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_storm_arrives_in_bounded_batches_on_one_node() {
    let mut args = vec!["--presence-batch-above", "20"];
    args.extend_from_slice(&QUEUE);
    let node = Node::start(&args);
    check_batched_storm(std::slice::from_ref(&node), &node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_storm_on_one_node_is_batched_on_another_with_few_members() {
    let redis = RedisServer::start();
    let mut args = vec!["--presence-batch-above", "20"];
    args.extend_from_slice(&QUEUE);
    let nodes = cluster(&redis, 2, &args);
    // Every joiner on n0; the observer alone on n1 still gets batches, since
    // the room is big across the cluster.
    check_batched_storm(&nodes[..1], &nodes[1]).await;
}

/// A burst of joins into a small room (a node restarting, its clients all
/// coming back): the first changes reach an observer one by one, the rest
/// of that second in one `presence_batch`; every joiner is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_burst_in_a_small_room_is_coalesced_past_its_budget() {
    const BURST: usize = 80;
    let node = Node::start(&QUEUE);
    let mut observer = WsClient::connect(&node.ws_url("viewer")).await;
    observer.join("burst").await;
    let _members = fill(std::slice::from_ref(&node), "burst", BURST).await;
    let mut one_by_one = 0;
    let mut listed = BTreeSet::new();
    while listed.len() < BURST {
        let frame = observer
            .expect(|f| {
                matches!(f, ServerFrame::PresenceBatch { .. } | ServerFrame::Presence { .. })
            })
            .await;
        match frame {
            ServerFrame::Presence { user, state: PresenceState::Join, .. }
                if user.as_str() != "viewer" =>
            {
                one_by_one += 1;
                listed.insert(user.to_string());
            }
            ServerFrame::PresenceBatch { joined, truncated, .. } => {
                assert!(!truncated, "{BURST} joiners fit in one batch's list");
                listed.extend(joined.iter().map(|u| u.to_string()).filter(|u| u != "viewer"));
            }
            _ => {}
        }
    }
    assert!(listed.iter().all(|u| u.starts_with('m')), "{listed:?}");
    assert!(one_by_one > 0, "a quiet room's first joins show at once");
    assert!(one_by_one < BURST, "past the budget, joins wait for the batch");
}
