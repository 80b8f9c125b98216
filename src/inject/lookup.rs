//! The lookup between [`wanted`](super::wanted) and [`inject`](super::inject):
//! the images of many containers, of many pods, read at once through one
//! [`Resolver`], within its budget.
//!
//! Each distinct image (with the platforms its pod can run on) is asked
//! once, and all of them side by side, so the whole lookup takes as long
//! as the slowest image, never more than the resolver's budget: a manifest
//! of ten Deployments that share an image makes one lookup, and a
//! registry that never answers costs the budget once. The answers are then
//! handed to each pod by container ([`Lookups::images`]), each refusal
//! naming the container's own `kubexit.io/entrypoint.NAME`.
//!
//! Only with the cargo feature `registry`; without it, callers inject as
//! `--offline` does.

use std::collections::HashMap;

use super::images::{ImageRun, Images, Wanted};
use crate::registry::{Keyring, Platform, RegistryError, Resolved, Resolver};

/// An image and the platforms it is read for.
type Key = (String, Vec<String>);

/// The answers of one lookup, by image and platforms.
#[derive(Default)]
pub struct Lookups {
    answers: HashMap<Key, Result<Resolved, RegistryError>>,
}

fn key(wanted: &Wanted) -> Key {
    (wanted.image.clone(), wanted.platforms.clone())
}

impl Lookups {
    /// Reads the images of `wanted`, each distinct one once, all at once,
    /// with the credentials of `keyring` (`None`: the resolver's own).
    pub async fn read(resolver: &Resolver, wanted: &[Wanted], keyring: Option<&Keyring>) -> Self {
        let mut keys: Vec<Key> = wanted.iter().map(key).collect();
        keys.sort();
        keys.dedup();
        let reads = keys.iter().map(|(image, platforms)| async move {
            let platforms: Result<Vec<Platform>, String> =
                platforms.iter().map(|p| Platform::parse(p)).collect();
            match platforms {
                Ok(platforms) => match keyring {
                    Some(keyring) => resolver.resolve_with(image, &platforms, keyring).await,
                    None => resolver.resolve(image, &platforms).await,
                },
                Err(why) => Err(RegistryError::bad_platform(image, why)),
            }
        });
        let answers = futures_util::future::join_all(reads).await;
        Lookups {
            answers: keys.into_iter().zip(answers).collect(),
        }
    }

    /// What `inject` is given for the containers of one pod, `wanted` its
    /// [`wanted`](super::wanted); a container whose image was not read is
    /// left out.
    pub fn images(&self, wanted: &[Wanted]) -> Images {
        let mut images = Images::new();
        for want in wanted {
            let Some(answer) = self.answers.get(&key(want)) else {
                continue;
            };
            let answer = match answer {
                Ok(resolved) => Ok(ImageRun {
                    pinned: format!("{}@{}", resolved.image, resolved.digest),
                    entrypoint: resolved.entrypoint.clone(),
                    cmd: resolved.cmd.clone(),
                }),
                Err(refusal) => Err(refusal.clone().for_container(&want.container).to_string()),
            };
            images.insert(want.container.clone(), answer);
        }
        images
    }
}
