//! Resource quantities (`500m`, `1Gi`, `2e3`) as Kubernetes stores them: a write's quantities
//! are parsed and stored in canonical form (`0.5` -> `500m`, `1024Mi` -> `1Gi`, `1000` ->
//! `1k`), as `resource.Quantity` does when the API server decodes an object, so that a value
//! written two ways is one value. A string that is not a quantity is a 400 like the real
//! server's decoding error.
//!
//! - The format follows the suffix: binary (`Ki` ... `Ei`), decimal SI (`n`, `u`, `m`, `k`,
//!   `M`, `G`, `T`, `P`, `E`, none) or decimal exponent (`e3`, `E-3`).
//! - Values are rounded up to nano units (`0.1n` -> `1n`); a binary value below 1024 or not an
//!   integer is written in decimal SI.
//! - Numbers (`cpu: 1` in YAML) are quantities too.

use serde_json::Value;

/// The format a quantity is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    BinarySi,
    DecimalSi,
    DecimalExponent,
}

/// A parsed quantity: `nanos` billionths of a unit, and the format of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity {
    nanos: i128,
    format: Format,
}

const NANO: i128 = 1_000_000_000;

fn pow10(e: u32) -> Option<i128> {
    10i128.checked_pow(e)
}

impl Quantity {
    /// Parses a quantity string; `None` when it is not one.
    pub fn parse(s: &str) -> Option<Quantity> {
        let s = s.trim();
        let (negative, rest) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() && frac.is_empty() || frac.contains('.') {
            return None;
        }
        let (format, base2, exp10): (Format, u32, i32) = match suffix {
            "" => (Format::DecimalSi, 0, 0),
            "n" => (Format::DecimalSi, 0, -9),
            "u" => (Format::DecimalSi, 0, -6),
            "m" => (Format::DecimalSi, 0, -3),
            "k" => (Format::DecimalSi, 0, 3),
            "M" => (Format::DecimalSi, 0, 6),
            "G" => (Format::DecimalSi, 0, 9),
            "T" => (Format::DecimalSi, 0, 12),
            "P" => (Format::DecimalSi, 0, 15),
            "E" => (Format::DecimalSi, 0, 18),
            "Ki" => (Format::BinarySi, 10, 0),
            "Mi" => (Format::BinarySi, 20, 0),
            "Gi" => (Format::BinarySi, 30, 0),
            "Ti" => (Format::BinarySi, 40, 0),
            "Pi" => (Format::BinarySi, 50, 0),
            "Ei" => (Format::BinarySi, 60, 0),
            e if e.starts_with(['e', 'E']) => {
                let exp: i32 = e[1..].parse().ok()?;
                if e[1..].starts_with('+') || e.len() < 2 {
                    return None;
                }
                (Format::DecimalExponent, 0, exp)
            }
            _ => return None,
        };
        // digits = int.frac, value = digits * 10^(exp10 - len(frac)) * 2^base2, in nanos
        // (rounded up, away from zero, at one nano).
        let digits: String = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            if digits.len() > 30 {
                return None;
            }
            digits.parse().ok()?
        };
        let mantissa = mantissa.checked_mul(1i128.checked_shl(base2)?)?;
        let scale = exp10 - frac.len() as i32 + 9;
        let nanos = if scale >= 0 {
            mantissa.checked_mul(pow10(scale as u32)?)?
        } else {
            let d = pow10((-scale) as u32).unwrap_or(i128::MAX);
            let q = mantissa / d;
            if mantissa % d != 0 { q + 1 } else { q }
        };
        let mut format = format;
        if format == Format::BinarySi && nanos > 0 && nanos < NANO {
            format = Format::DecimalSi;
        }
        Some(Quantity {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// The canonical string, as Kubernetes writes it.
    pub fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".into();
        }
        let mut format = self.format;
        if format == Format::BinarySi && (self.nanos.abs() < 1024 * NANO || self.nanos % NANO != 0)
        {
            format = Format::DecimalSi;
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        if format == Format::BinarySi {
            let mut n = (self.nanos / NANO).abs();
            let mut k = 0;
            while k < 6 && n % 1024 == 0 {
                n /= 1024;
                k += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][k];
            return format!("{sign}{n}{suffix}");
        }
        let mut m = self.nanos.abs();
        let mut e: i32 = -9;
        while m % 10 == 0 {
            m /= 10;
            e += 1;
        }
        match e.rem_euclid(3) {
            1 => {
                m *= 10;
                e -= 1;
            }
            2 => {
                m *= 100;
                e -= 2;
            }
            _ => {}
        }
        let suffix = match (format, e) {
            (_, 0) => String::new(),
            (Format::DecimalSi, -9) => "n".into(),
            (Format::DecimalSi, -6) => "u".into(),
            (Format::DecimalSi, -3) => "m".into(),
            (Format::DecimalSi, 3) => "k".into(),
            (Format::DecimalSi, 6) => "M".into(),
            (Format::DecimalSi, 9) => "G".into(),
            (Format::DecimalSi, 12) => "T".into(),
            (Format::DecimalSi, 15) => "P".into(),
            (Format::DecimalSi, 18) => "E".into(),
            (_, e) => format!("e{e}"),
        };
        format!("{sign}{m}{suffix}")
    }
}

/// A quantity value in an object: a string or a number. `Err` holds the message of the
/// real server's decoding error.
fn canonical_value(v: &Value) -> Result<Option<Value>, String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Ok(None),
    };
    match Quantity::parse(&text) {
        Some(q) => Ok(Some(Value::String(q.canonical()))),
        None => Err(format!(
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' ({text:?})"
        )),
    }
}

fn each_map_value(v: Option<&mut Value>, errs: &mut Vec<String>) {
    let Some(m) = v.and_then(Value::as_object_mut) else {
        return;
    };
    for x in m.values_mut() {
        match canonical_value(x) {
            Ok(Some(c)) => *x = c,
            Ok(None) => {}
            Err(e) => errs.push(e),
        }
    }
}

fn one(v: Option<&mut Value>, errs: &mut Vec<String>) {
    let Some(x) = v else { return };
    match canonical_value(x) {
        Ok(Some(c)) => *x = c,
        Ok(None) => {}
        Err(e) => errs.push(e),
    }
}

fn resources(r: Option<&mut Value>, errs: &mut Vec<String>) {
    let Some(r) = r else { return };
    each_map_value(r.get_mut("limits"), errs);
    each_map_value(r.get_mut("requests"), errs);
}

fn pod_spec(spec: Option<&mut Value>, errs: &mut Vec<String>) {
    let Some(spec) = spec else { return };
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            resources(c.get_mut("resources"), errs);
        }
    }
    each_map_value(spec.get_mut("overhead"), errs);
    for v in spec
        .get_mut("volumes")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        one(v.pointer_mut("/emptyDir/sizeLimit"), errs);
        resources(
            v.pointer_mut("/ephemeral/volumeClaimTemplate/spec/resources"),
            errs,
        );
    }
}

/// Writes the quantities of a built-in object in canonical form; the error is the first
/// value that is not a quantity.
pub(crate) fn canonicalize(group: &str, kind: &str, obj: &mut Value) -> Result<(), String> {
    let mut errs = Vec::new();
    match (group, kind) {
        ("", "Pod") => pod_spec(obj.get_mut("spec"), &mut errs),
        ("", "PodTemplate") => pod_spec(obj.pointer_mut("/template/spec"), &mut errs),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job")
        | ("", "ReplicationController") => {
            pod_spec(obj.pointer_mut("/spec/template/spec"), &mut errs);
            for t in obj
                .pointer_mut("/spec/volumeClaimTemplates")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                resources(t.pointer_mut("/spec/resources"), &mut errs);
            }
        }
        ("batch", "CronJob") => pod_spec(
            obj.pointer_mut("/spec/jobTemplate/spec/template/spec"),
            &mut errs,
        ),
        ("", "PersistentVolumeClaim") => {
            resources(obj.pointer_mut("/spec/resources"), &mut errs);
            each_map_value(obj.pointer_mut("/status/capacity"), &mut errs);
        }
        ("", "PersistentVolume") => each_map_value(obj.pointer_mut("/spec/capacity"), &mut errs),
        ("", "Node") => {
            each_map_value(obj.pointer_mut("/status/capacity"), &mut errs);
            each_map_value(obj.pointer_mut("/status/allocatable"), &mut errs);
        }
        ("", "ResourceQuota") => {
            each_map_value(obj.pointer_mut("/spec/hard"), &mut errs);
            each_map_value(obj.pointer_mut("/status/hard"), &mut errs);
            each_map_value(obj.pointer_mut("/status/used"), &mut errs);
        }
        ("", "LimitRange") => {
            for l in obj
                .pointer_mut("/spec/limits")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                for k in [
                    "max",
                    "min",
                    "default",
                    "defaultRequest",
                    "maxLimitRequestRatio",
                ] {
                    each_map_value(l.get_mut(k), &mut errs);
                }
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            for m in obj
                .pointer_mut("/spec/metrics")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                for src in [
                    "resource",
                    "pods",
                    "object",
                    "external",
                    "containerResource",
                ] {
                    if let Some(t) = m.get_mut(src).and_then(|s| s.get_mut("target")) {
                        one(t.get_mut("value"), &mut errs);
                        one(t.get_mut("averageValue"), &mut errs);
                    }
                }
            }
        }
        _ => {}
    }
    match errs.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_as_kubernetes_writes_them() {
        for (input, want) in [
            ("0.5", "500m"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("1.5Ki", "1536"),
            ("0.5Ki", "512"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("100m", "100m"),
            ("1", "1"),
            ("0", "0"),
            ("0Mi", "0"),
            ("2e3", "2e3"),
            ("1.5e3", "1500"),
            ("0.1n", "1n"),
            ("1Gi", "1Gi"),
            ("128974848", "128974848"),
            ("129e6", "129e6"),
            ("123Mi", "123Mi"),
            ("-1", "-1"),
            ("+2", "2"),
            ("12345678901234567890", "12345678901234567890"),
            ("1E", "1E"),
            ("0.000001", "1u"),
        ] {
            let got = Quantity::parse(input).map(|q| q.canonical());
            assert_eq!(got.as_deref(), Some(want), "{input}");
        }
        for bad in ["", "abc", "1.2.3", "1Xi", "--1", "1e", ".", "1 Gi"] {
            assert!(Quantity::parse(bad).is_none(), "{bad}");
        }
    }
}
