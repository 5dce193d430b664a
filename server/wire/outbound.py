"""Domain to proto: results, completions and stream items as the API sends them."""

from __future__ import annotations

from collections.abc import Sequence

from google.rpc import status_pb2

from labelprob.server.classify import Classification, ScoredCompletion, TokenScore, Usage
from labelprob.server.wire.enums import CALIBRATIONS_OUT, DECISIONS_OUT, METHODS_OUT, MODES_OUT
from labelprob.v1 import classifier_pb2 as pb


def token(t: TokenScore) -> pb.TokenLogprob:
    return pb.TokenLogprob(token_id=t.token_id, token=t.token, logprob=t.logprob)


def usage(u: Usage) -> pb.Usage:
    return pb.Usage(
        prompt_tokens=u.prompt_tokens, cached_prompt_tokens=u.cached_tokens, engine_reads=u.reads
    )


def classification(c: Classification) -> pb.Classification:
    return pb.Classification(
        top_label=c.top_label,
        labels=[
            pb.LabelScore(
                name=lb.name,
                probability=lb.probability,
                logprob=lb.logprob,
                tokens=[token(t) for t in lb.tokens],
                uncalibrated_probability=lb.uncalibrated_probability,
                score=lb.score,
                estimated=lb.estimated,
                channel_logprob=lb.channel_logprob,
                channel_estimated=lb.channel_estimated,
            )
            for lb in c.labels
        ],
        label_mass=c.label_mass,
        entropy=c.entropy,
        margin=c.margin,
        top_alternatives=[token(t) for t in c.top_alternatives],
        decision=DECISIONS_OUT[c.decision],
        usage=usage(c.usage),
        mode=MODES_OUT[c.mode],
        calibration=CALIBRATIONS_OUT[c.calibration],
        truncated=c.truncated,
        selected_labels=list(c.selected_labels),
        method=METHODS_OUT[c.method],
    )


def batch_response(results: Sequence[Classification]) -> pb.ClassifyBatchResponse:
    """Results in input order, and their usage summed."""
    total = Usage()
    for r in results:
        total.add(r.usage)
    return pb.ClassifyBatchResponse(
        results=[classification(r) for r in results], usage=usage(total)
    )


def completion(s: ScoredCompletion) -> pb.ScoreCompletionResponse:
    return pb.ScoreCompletionResponse(
        tokens=[
            pb.ScoredToken(token=token(t), alternatives=[token(a) for a in alts])
            for t, alts in zip(s.tokens, s.alternatives, strict=True)
        ],
        sum_logprob=s.sum_logprob,
        mean_logprob=s.mean_logprob,
        usage=usage(s.usage),
    )


def stream_result(item_id: str, result: pb.Classification) -> pb.ClassifyStreamResponse:
    return pb.ClassifyStreamResponse(id=item_id, result=result)


def stream_error(item_id: str, status: status_pb2.Status) -> pb.ClassifyStreamResponse:
    return pb.ClassifyStreamResponse(
        id=item_id, status_code=status.code, error_message=status.message
    )
