#!/usr/bin/python3
"""torch_model_ops.py - checks of tests/torch_model.py's transformer ops and
of the descriptions that use them (the ctest torch_model_ops):

- attention equals torch.nn.MultiheadAttention (batch_first, no mask) with
  the same projection weights; groupnorm, layernorm, tokens, position and
  mean_tokens equal their PyTorch one-liners;
- shape refusals: groupnorm groups not dividing channels or on (T,D),
  layernorm dim, attention heads, position (tokens, dim), tokens on (T,D),
  mean_tokens on (C,H,W), embedding on float inputs or with num != vocab,
  another op on token ids;
- models/vgg16-gn.json has 15,253,578 parameters and, under the FedPara
  rule of tests/fedpara_count.py, 1,546,620 at gamma 0.1 (the paper's
  1.55M) and 12,920,900 at 0.9 (12.92M); vit-tiny and text-tiny build with
  the documented state_dict keys;
- the goldens of tests/gen_transformer_golden.sh: their stored weights
  give the stored logits and gradients again.
Exit 0 on success, 1 on a failed check, 77 without python3-torch.
"""
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from torch_model import Described, DescriptionError, F, nn, st_load, torch  # noqa: E402
import fedpara_count  # noqa: E402

fails = 0


def check(ok, what):
    global fails
    print(("ok   " if ok else "FAIL ") + what)
    fails += 0 if ok else 1


def desc(inp, modules, classes=None):
    d = {"format": "fedloha-model/1", "input": inp, "modules": modules}
    if classes:
        d["classes"] = classes
    return d


def ops_match():
    torch.manual_seed(1)
    net = Described(desc({"shape": [4, 3, 2]}, [
        {"op": "groupnorm", "name": "gn", "groups": 2, "channels": 4},
        {"op": "tokens"},
        {"op": "position", "name": "pos", "tokens": 6, "dim": 4},
        {"op": "layernorm", "name": "ln", "dim": 4},
        {"op": "attention", "name": "attn", "dim": 4, "heads": 2},
        {"op": "mean_tokens"}]))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(3, 4, 3, 2)
    gn = F.group_norm(x, 2, net.gn.weight, net.gn.bias, 1e-5)
    t = gn.flatten(2).transpose(1, 2) + net.pos.weight
    ln = F.layer_norm(t, (4,), net.ln.weight, net.ln.bias, 1e-5)
    mha = nn.MultiheadAttention(4, 2, batch_first=True)
    a = net.attn
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
        mha.out_proj.weight.copy_(a.out_proj.weight)
        mha.out_proj.bias.copy_(a.out_proj.bias)
        ref = mha(ln, ln, ln, need_weights=False)[0].mean(1)
        got = net(x)
    check(got.shape == (3, 4) and torch.allclose(got, ref, atol=1e-5),
          f"groupnorm, tokens, position, layernorm, attention, mean_tokens = PyTorch "
          f"(max diff {float((got - ref).abs().max()):.2e})")
    check(sorted(net.state_dict()) == sorted(
        ["gn.weight", "gn.bias", "pos.weight", "ln.weight", "ln.bias"] +
        [f"attn.{p}.{w}" for p in ("q_proj", "k_proj", "v_proj", "out_proj") for w in ("weight", "bias")]),
        "state_dict keys of the new ops")
    check(float(Described(desc({"shape": [2, 3]}, [
        {"op": "position", "name": "p", "tokens": 2, "dim": 3}])).p.weight.abs().sum()) == 0,
        "position starts at zeros")


REFUSED = [
    ({"shape": [6, 2, 2]}, [{"op": "groupnorm", "name": "g", "groups": 4, "channels": 6}], "groups"),
    ({"shape": [6, 2, 2]}, [{"op": "groupnorm", "name": "g", "groups": 2, "channels": 4}], "channels"),
    ({"shape": [6, 4]}, [{"op": "groupnorm", "name": "g", "groups": 2, "channels": 6}], "(C,H,W)"),
    ({"shape": [6, 4]}, [{"op": "layernorm", "name": "l", "dim": 6}], "last dimension"),
    ({"shape": [6, 4]}, [{"op": "attention", "name": "a", "dim": 4, "heads": 3}], "heads"),
    ({"shape": [6, 4]}, [{"op": "attention", "name": "a", "dim": 6, "heads": 2}], "dim"),
    ({"shape": [4, 6, 6]}, [{"op": "attention", "name": "a", "dim": 6, "heads": 2}], "(T, D)"),
    ({"shape": [6, 4]}, [{"op": "position", "name": "p", "tokens": 4, "dim": 6}], "(T, D)"),
    ({"shape": [6, 4]}, [{"op": "tokens"}], "(C,H,W)"),
    ({"shape": [2, 3, 3]}, [{"op": "mean_tokens"}], "(T, D)"),
    ({"shape": [6, 4]}, [{"op": "embedding", "name": "e", "num": 4, "dim": 2}], "token input"),
    ({"tokens": 4, "vocab": 9}, [{"op": "embedding", "name": "e", "num": 8, "dim": 2}], "vocab"),
    ({"tokens": 4, "vocab": 9}, [{"op": "flatten"}], "token ids"),
    ({"tokens": 4, "vocab": 9}, [{"op": "residual", "modules": []}], "token ids"),
]


def refusals():
    for inp, mods, word in REFUSED:
        try:
            Described(desc(inp, mods))
            check(False, f"{mods[0]['op']} on {inp} refused")
        except DescriptionError as e:
            check(word in str(e), f"{mods[0]['op']} on {inp} refused: {e}")


def models():
    root = os.path.join(here, "..", "models")
    with open(os.path.join(root, "vgg16-gn.json")) as f:
        vgg = json.load(f)
    n = sum(p.numel() for p in Described(vgg).parameters())
    check(n == 15253578, f"vgg16-gn: {n} parameters (15,253,578)")
    for g, want in ((0.1, 1546620), (0.9, 12920900)):
        got = fedpara_count.count(vgg, n, g, True, False)[0]
        check(got == want, f"vgg16-gn FedPara gamma {g}: {got} ({want})")
    for name, keys in (("vit-tiny", ["patch_embed.weight", "pos.weight", "layers.3.attn.out_proj.bias",
                                     "layers.0.mlp.fc1.weight", "norm.weight", "head.bias"]),
                       ("text-tiny", ["embed.weight", "pos.weight", "layers.1.attn.q_proj.weight",
                                      "layers.1.ln2.bias", "head.weight"])):
        with open(os.path.join(root, name + ".json")) as f:
            sd = Described(json.load(f)).state_dict()
        check(all(k in sd for k in keys), f"{name}: state_dict holds {', '.join(keys)}")


def goldens():
    for name in ("transformer_ops", "transformer_tokens"):
        base = os.path.join(here, "data", "model_desc", name)
        with open(base + ".json") as f:
            net = Described(json.load(f)).eval()
        t = st_load(base + ".safetensors")
        sd = {k: v for k, v in t.items() if k in net.state_dict()}
        net.load_state_dict(sd, strict=True)
        logits = net(t["input"])
        logits.sum().backward()
        ok = torch.allclose(logits, t["logits"], atol=1e-5)
        for k, p in net.named_parameters():
            ok = ok and torch.allclose(p.grad, t["grad." + k], atol=1e-4, rtol=1e-4)
        check(ok, f"{name}.safetensors: logits and grad.* reproduce")


def main():
    torch.set_num_threads(1)
    ops_match()
    refusals()
    models()
    goldens()
    print(f"{fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
