//! Turning token counts and tool calls into micro-dollars.
//!
//! Prices are micro-dollars per million tokens, so the exact cost of a
//! request is `sum(tokens × price) / 1,000,000` micro-dollars; it is rounded
//! up once per request (never per token kind), so a request never costs less
//! than its exact price and rounding adds at most one micro-dollar. All
//! arithmetic is in `u128` and saturates at `i64::MAX` micro-dollars.

use caracal_api::Micros;
use caracal_api::prices::ModelPrice;

const TOKENS_PER_PRICE_UNIT: u128 = 1_000_000;

/// Tokens a provider reported for one request, in disjoint kinds. The
/// gateway normalises each provider's usage report into these (for example
/// OpenAI's `prompt_tokens` includes cached tokens; those are moved out of
/// `input` into `cached_input`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub output: u64,
    pub reasoning: u64,
}

/// Per-million-token prices resolved for one model, with the worst case of
/// each side precomputed for reservations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelRates {
    pub input: u128,
    pub cached_input: u128,
    pub cache_write: u128,
    pub output: u128,
    pub reasoning: u128,
    /// The highest price any prompt token can be billed at.
    pub worst_input: u128,
    /// The highest price any generated token can be billed at.
    pub worst_output: u128,
    pub max_output_tokens: Option<u32>,
}

fn rate(m: Micros) -> u128 {
    // Catalog prices are parsed non-negative; a negative value could only be
    // constructed in code, and is treated as the most expensive possible
    // price so it can never make a request look cheaper.
    u128::try_from(m.get()).unwrap_or(u128::from(u64::MAX))
}

impl ModelRates {
    pub fn from_price(p: &ModelPrice) -> ModelRates {
        let input = rate(p.input);
        let output = rate(p.output);
        let cached_input = p.cached_input.map_or(input, rate);
        let cache_write = p.cache_write.map_or(input, rate);
        let reasoning = p.reasoning.map_or(output, rate);
        ModelRates {
            input,
            cached_input,
            cache_write,
            output,
            reasoning,
            worst_input: input.max(cached_input).max(cache_write),
            worst_output: output.max(reasoning),
            max_output_tokens: p.max_output_tokens,
        }
    }

    /// The exact cost of reported usage, rounded up to a micro-dollar.
    pub fn cost(&self, u: &Usage) -> Micros {
        round_up(scaled_sum(&[
            (u.input, self.input),
            (u.cached_input, self.cached_input),
            (u.cache_write, self.cache_write),
            (u.output, self.output),
            (u.reasoning, self.reasoning),
        ]))
    }

    /// The most a request with `input_tokens` of prompt and at most
    /// `max_output` generated tokens can cost, whatever kinds they turn out
    /// to be.
    pub fn worst_case(&self, input_tokens: u64, max_output: u64) -> Micros {
        round_up(scaled_sum(&[
            (input_tokens, self.worst_input),
            (max_output, self.worst_output),
        ]))
    }

    /// The largest number of generated tokens whose worst case, together
    /// with `input_tokens` of prompt, fits in `amount`. `None` when the
    /// prompt alone does not fit. Capped at the model's own ceiling and at
    /// `u32::MAX`.
    pub fn max_output_within(&self, input_tokens: u64, amount: Micros) -> Option<u32> {
        let budget = u128::try_from(amount.get()).ok()? * TOKENS_PER_PRICE_UNIT;
        let prompt = u128::from(input_tokens) * self.worst_input;
        let left = budget.checked_sub(prompt)?;
        let ceiling = u128::from(self.max_output_tokens.unwrap_or(u32::MAX));
        // Free output (a zero price) is bounded only by the ceiling.
        let n = left
            .checked_div(self.worst_output)
            .map_or(ceiling, |n| n.min(ceiling));
        // n <= ceiling <= u32::MAX, so the conversion cannot fail.
        Some(u32::try_from(n).unwrap_or(u32::MAX))
    }
}

/// `Σ tokens × rate`, saturating: each product fits in `u128`, but a sum of
/// several near-maximal ones does not, and wrapping would make a huge usage
/// report cost almost nothing.
fn scaled_sum(terms: &[(u64, u128)]) -> u128 {
    terms.iter().fold(0u128, |sum, &(tokens, rate)| {
        sum.saturating_add(u128::from(tokens).saturating_mul(rate))
    })
}

/// Divide scaled micro-dollars-per-million by a million, rounding up, and
/// saturate to the largest representable amount.
fn round_up(scaled: u128) -> Micros {
    let micros = scaled.div_ceil(TOKENS_PER_PRICE_UNIT);
    Micros(i64::try_from(micros).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: i64, output: i64) -> ModelPrice {
        ModelPrice {
            provider: "openai".into(),
            model: "m".into(),
            aliases: vec![],
            input: Micros(input),
            output: Micros(output),
            cached_input: None,
            cache_write: None,
            reasoning: None,
            max_output_tokens: None,
        }
    }

    #[test]
    fn cost_rounds_up_once_per_request() {
        // $2.50 / 1M input, $10 / 1M output.
        let r = ModelRates::from_price(&price(2_500_000, 10_000_000));
        let cases = [
            (Usage::default(), 0),
            // 1 input token = 2.5 micro-dollars -> 3.
            (
                Usage {
                    input: 1,
                    ..Usage::default()
                },
                3,
            ),
            // 2 input tokens = exactly 5.
            (
                Usage {
                    input: 2,
                    ..Usage::default()
                },
                5,
            ),
            // 1 input + 1 output = 12.5 -> 13 (rounded once, not 3 + 10).
            (
                Usage {
                    input: 1,
                    output: 1,
                    ..Usage::default()
                },
                13,
            ),
            // 1M input + 1M output = $12.50 exactly.
            (
                Usage {
                    input: 1_000_000,
                    output: 1_000_000,
                    ..Usage::default()
                },
                12_500_000,
            ),
            // Reasoning defaults to the output price, cached to the input price.
            (
                Usage {
                    reasoning: 3,
                    cached_input: 2,
                    ..Usage::default()
                },
                35,
            ),
        ];
        for (usage, want) in cases {
            assert_eq!(r.cost(&usage), Micros(want), "{usage:?}");
        }
    }

    #[test]
    fn discounted_kinds_use_their_own_prices() {
        let mut p = price(3_000_000, 15_000_000);
        p.cached_input = Some(Micros(300_000));
        p.cache_write = Some(Micros(3_750_000));
        let r = ModelRates::from_price(&p);
        let u = Usage {
            input: 1000,
            cached_input: 10_000,
            cache_write: 2000,
            output: 500,
            reasoning: 0,
        };
        // 3000 + 3000 + 7500 + 7500 micro-dollars.
        assert_eq!(r.cost(&u), Micros(21_000));
        // The worst case prices every prompt token as a cache write.
        assert_eq!(r.worst_case(1000, 100), Micros(3750 + 1500));
    }

    #[test]
    fn largest_output_that_fits() {
        let r = ModelRates::from_price(&price(2_500_000, 10_000_000));
        // $0.01 = 10,000 micros; 1000 prompt tokens cost 2,500; 7,500 left
        // pays for 750 output tokens at 10 micros each.
        assert_eq!(r.max_output_within(1000, Micros(10_000)), Some(750));
        assert!(r.worst_case(1000, 750) <= Micros(10_000));
        assert!(r.worst_case(1000, 751) > Micros(10_000));
        // The prompt alone does not fit.
        assert_eq!(r.max_output_within(5000, Micros(10_000)), None);
        // The model's own ceiling wins when budgets are large.
        let mut p = price(2_500_000, 10_000_000);
        p.max_output_tokens = Some(16_384);
        let capped = ModelRates::from_price(&p);
        assert_eq!(
            capped.max_output_within(0, Micros(1_000_000_000)),
            Some(16_384)
        );
    }

    #[test]
    fn huge_counts_saturate_instead_of_wrapping() {
        let r = ModelRates::from_price(&price(i64::MAX, i64::MAX));
        assert_eq!(r.worst_case(u64::MAX, u64::MAX), Micros(i64::MAX));
        // Five near-maximal products overflow even u128: the sum must
        // saturate, not wrap to a small cost.
        let all = Usage {
            input: u64::MAX,
            cached_input: u64::MAX,
            cache_write: u64::MAX,
            output: u64::MAX,
            reasoning: u64::MAX,
        };
        assert_eq!(r.cost(&all), Micros(i64::MAX));
        // A negative price (only constructible in code) counts as the
        // dearest possible one, so it saturates too.
        let negative = ModelRates::from_price(&price(-1, -1));
        assert_eq!(negative.cost(&all), Micros(i64::MAX));
    }
}
