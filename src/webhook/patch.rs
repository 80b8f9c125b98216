//! The JSON Patch (RFC 6902) that turns the pod the API server sent into
//! the pod `inject` made.
//!
//! The API server applies the patch to its own copy of the pod, so the
//! patch should say what was added and nothing else: an element put at the
//! front of a list is one `add` at index 0, not a `replace` of every
//! element after it (which is what a diff by index, such as json-patch's
//! own `diff`, writes, copying the user's values back over themselves).
//! [`between`] therefore compares lists by what they hold: when one list is
//! the other with elements inserted (or taken out), the patch inserts (or
//! removes) just those; lists of the same length are compared element by
//! element; anything else is replaced whole. Maps are compared key by key.
//! Whatever the two values, applying the patch to `before` gives `after`
//! (see the property test below).

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::Value;

/// The patch from `before` to `after`; empty when they are equal.
pub fn between(before: &Value, after: &Value) -> Patch {
    let mut operations = Vec::new();
    diff(&mut PointerBuf::new(), before, after, &mut operations);
    Patch(operations)
}

fn diff(path: &mut PointerBuf, before: &Value, after: &Value, out: &mut Vec<PatchOperation>) {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, new_value) in new {
                path.push_back(key);
                match old.get(key) {
                    Some(old_value) => diff(path, old_value, new_value, out),
                    None => out.push(add(path, new_value)),
                }
                path.pop_back();
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                path.push_back(key);
                out.push(PatchOperation::Remove(RemoveOperation {
                    path: path.clone(),
                }));
                path.pop_back();
            }
        }
        (Value::Array(old), Value::Array(new)) => diff_list(path, old, new, out),
        _ if before == after => {}
        _ => out.push(PatchOperation::Replace(ReplaceOperation {
            path: path.clone(),
            value: after.clone(),
        })),
    }
}

fn diff_list(path: &mut PointerBuf, old: &[Value], new: &[Value], out: &mut Vec<PatchOperation>) {
    if old.len() == new.len() {
        for (index, (old_value, new_value)) in old.iter().zip(new).enumerate() {
            path.push_back(index);
            diff(path, old_value, new_value, out);
            path.pop_back();
        }
    } else if let Some(inserted) = inserted(old, new) {
        // In increasing order: each index is where the element sits once
        // those before it are in place.
        for index in inserted {
            path.push_back(index);
            out.push(add(path, &new[index]));
            path.pop_back();
        }
    } else if let Some(removed) = inserted(new, old) {
        // In decreasing order, so that each index is still the original's.
        for index in removed.into_iter().rev() {
            path.push_back(index);
            out.push(PatchOperation::Remove(RemoveOperation {
                path: path.clone(),
            }));
            path.pop_back();
        }
    } else {
        out.push(PatchOperation::Replace(ReplaceOperation {
            path: path.clone(),
            value: Value::Array(new.to_vec()),
        }));
    }
}

/// When `long` is `short` with elements inserted, the indices in `long` of
/// the inserted elements; `None` otherwise.
fn inserted(short: &[Value], long: &[Value]) -> Option<Vec<usize>> {
    let mut extra = Vec::with_capacity(long.len().saturating_sub(short.len()));
    let mut kept = short.iter().peekable();
    for (index, value) in long.iter().enumerate() {
        if kept.peek() == Some(&value) {
            kept.next();
        } else {
            extra.push(index);
        }
    }
    kept.peek().is_none().then_some(extra)
}

fn add(path: &PointerBuf, value: &Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: path.clone(),
        value: value.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn applied(before: &Value, patch: &Patch) -> Value {
        let mut value = before.clone();
        json_patch::patch(&mut value, patch).expect("the patch applies");
        value
    }

    #[test]
    fn an_element_put_first_is_one_add_at_index_zero() {
        let before = json!({"command": ["app", "--serve"]});
        let after = json!({"command": ["/kubexit/kubexit", "app", "--serve"]});
        let patch = between(&before, &after);
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([{"op": "add", "path": "/command/0", "value": "/kubexit/kubexit"}])
        );
        assert_eq!(applied(&before, &patch), after);
    }

    #[test]
    fn keys_with_a_slash_are_escaped_in_the_path() {
        let before = json!({"metadata": {"annotations": {"a": "b"}}});
        let after = json!({"metadata": {"annotations": {"a": "b", "kubexit.io/injected": "{}"}}});
        let patch = between(&before, &after);
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([{"op": "add", "path": "/metadata/annotations/kubexit.io~1injected", "value": "{}"}])
        );
    }

    #[test]
    fn elements_taken_out_are_removed_from_the_last() {
        let before = json!([1, 2, 3, 4]);
        let after = json!([1, 3]);
        let patch = between(&before, &after);
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([{"op": "remove", "path": "/3"}, {"op": "remove", "path": "/1"}])
        );
        assert_eq!(applied(&before, &patch), after);
    }

    #[test]
    fn equal_values_give_an_empty_patch() {
        let pod = json!({"spec": {"containers": [{"name": "a", "command": ["x"]}]}});
        assert!(between(&pod, &pod).0.is_empty());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0u8..4).prop_map(|n| json!(n)),
            "[a-c/~]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-c/~]{0,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn applying_the_patch_to_before_gives_after(before in json_value(), after in json_value()) {
            prop_assert_eq!(applied(&before, &between(&before, &after)), after);
        }

        #[test]
        fn inserting_into_a_list_is_only_adds(
            list in prop::collection::vec(0u8..3, 0..6),
            insert in prop::collection::vec((0usize..8, 0u8..3), 1..4),
        ) {
            let before = json!(list);
            let mut longer = list.clone();
            for (at, value) in insert {
                longer.insert(at.min(longer.len()), value);
            }
            let after = json!(longer);
            let patch = between(&before, &after);
            prop_assert!(patch.0.iter().all(|op| matches!(op, PatchOperation::Add(_))));
            prop_assert_eq!(applied(&before, &patch), after);
        }
    }
}
