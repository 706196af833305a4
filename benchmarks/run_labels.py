"""How each stored benchmark run was made, in words, for its section of benchmarks/RESULTS.md.

RUN_BY maps a results file's stem (benchmarks/results/NAME.json) to the command and the circumstances of that
run; a name not listed is described as `kfusion bench NAME`. Add a line here when you store a new named run.
"""

from __future__ import annotations

SOAK_RUN = ("The soak test (`KFUSION_SOAK_S=600 KFUSION_SOAK_STREAMS=64 KFUSION_SOAK_JSON=benchmarks/results/{} "
            "pytest -m slow tests/test_soak.py`)")
RUN_BY = {"soak": SOAK_RUN.format("soak.json"), "soak-run2": SOAK_RUN.format("soak-run2.json") + ", run again",
          "soak-run3": SOAK_RUN.format("soak-run3.json") + ", run a third time after the feature-kernel speed-up",
          "soak-run4": SOAK_RUN.format("soak-run4.json") + ", run a fourth time after audio and frames took the direct path",
          "soak-run5": SOAK_RUN.format("soak-run5.json") + ", run a fifth time after the server began freezing its start-up heap",
          "soak-run6": SOAK_RUN.format("soak-run6.json") + ", run a sixth time with ONNX Runtime's CPU memory arena off",
          "soak-run7": SOAK_RUN.format("soak-run7.json") + ", run a seventh time, recording memory minute by minute",
          "soak-run8": SOAK_RUN.format("soak-run8.json") + ", run an eighth time with the lip seal on",
          "soak-run9": SOAK_RUN.format("soak-run9.json") + (", run a ninth time (2026-11-26) after the server began "
                                                          "sampling its load and dropping refused clients' audio"),
          "soak-run10": SOAK_RUN.format("soak-run10.json") + (", run a tenth time (2026-11-26) after the leaner audio "
                                                            "path (commit 90f02e7: the per-stream hop store)"),
          "soak-run12": SOAK_RUN.format("soak-run12.json") + (", run a twelfth time (64 streams, the default "
                                                            "clients) on the fresh build machine of capacity-run14"),
          "soak-run11-128lean": ("The soak test at 128 streams with the lean load clients (`KFUSION_SOAK_S=600 "
                                 "KFUSION_SOAK_STREAMS=128 KFUSION_SOAK_CLIENT=lean KFUSION_SOAK_JSON=benchmarks/results/"
                                 "soak-run11-128lean.json pytest -m slow tests/test_soak.py`), on the fresh build "
                                 "machine of capacity-run14,"),
          "admission-run1": "`kfusion bench admission` (run 1 of 3, minutes before `admission.json`, same code)",
          "admission-run3": "`kfusion bench admission --max-load 0.95` (after runs 1 and 2, which used 0.85)",
          "capacity-run2": "`kfusion bench capacity --start 64`, run again after the feature-kernel speed-up,",
          "capacity-run3": ("`kfusion bench capacity --start 64`, run a third time on a slow stretch of the host "
                            "(speed probe 45-106 us per row against 45-113 in run 2),"),
          "capacity-run4": ("`kfusion bench capacity --start 64`, run a fourth time after audio and frames took the "
                            "direct path (`engine/connection.py`), on a slow stretch (speed probe 74-92 us per row),"),
          "latency-run2": ("`kfusion bench latency`, run again with the stage-6 default model (same architecture "
                           "and size), partly on a slow stretch of the host,"),
          "latency-run3": "`kfusion bench latency`, run a third time after audio and frames took the direct path,",
          "latency-run4": ("`kfusion bench latency`, run a fourth time with the cheaper export of the same model "
                           "(basis-major KAN, convolutions as GEMMs) and the ahead-of-time feature kernel,"),
          "latency-run5": ("`kfusion bench latency --streams 1,16,64`, with the start-up heap frozen and ONNX "
                           "Runtime's CPU memory arena off,"),
          "latency-run6": ("`kfusion bench latency --streams 1,16,64`, after the shipped model began asking for a lip "
                           "seal (numpy after every model call, which the bare-model peer includes too),"),
          "latency-run6-noseal": ("`kfusion bench latency --streams 1,16,64 --lip-seal-pct 0 --no-startup`, straight "
                                  "after run 6: the same engine without the lip seal, its peer,"),
          "capacity-run5": ("`kfusion bench capacity --start 64`, run a fifth time with the cheaper export of the "
                            "same model (basis-major KAN, convolutions as GEMMs),"),
          "capacity-run6": ("`kfusion bench capacity --start 128 --client lean`, with the lean load clients "
                            "(`benchmarks/lean_client.py`, now the default: streams connect before the audio starts),"),
          "capacity-run7": ("`kfusion bench capacity --start 128` (lean clients), straight after run 6; host stalls "
                            "made a few frames late even at 48 streams,"),
          "capacity-run8": ("`kfusion bench capacity --start 64 --client stream`, the `kfusion stream` load clients "
                            "as in runs 1-5, straight after run 7,"),
          "capacity-run9": "`kfusion bench capacity --start 128` (lean clients), a fourth run of the day's last hour,",
          "capacity-run10": ("`kfusion bench capacity --start 128` (lean clients), with the server time of the late "
                             "frames recorded (`late_frames_server_ms`),"),
          "capacity-run11": ("`kfusion bench capacity --start 128` (lean clients), after the server began freezing its "
                             "start-up heap (`gc.freeze()`), on a slow stretch (speed probe 31-63 us per row),"),
          "capacity-at128": ("`kfusion bench capacity --at 128 --repeats 5`: no search, five trials of 128 streams "
                             "each way, straight after run 11,"),
          "capacity-at96": ("`kfusion bench capacity --at 96 --repeats 5`: five trials of 96 streams each way, "
                            "straight after the 128 ones,"),
          "articulation-run2": ("`kfusion bench articulation`, run again after the shipped model began asking for a "
                                "lip seal of 1 % of the eye distance (`engine.face.seal_lips`),"),
          "articulation-run3": ("`kfusion bench articulation`, run again (2026-11-26) with the stage-22 model, whose "
                                "corpus added flite voices (shipped for an hour, then replaced by stage 23), and a "
                                "retrained offline model,"),
          "articulation-run4": ("`kfusion bench articulation`, run again with the stage-23 model (half stage 6, half a "
                                "fine-tune with more flite speech; `kfusion mix`),"),
          "articulation-flite": ("`kfusion bench articulation --engine flite --model STAGE6.onnx --plot ''`: the "
                                 "previous default (stage 6, `git show 1948a72:engine/assets/kfusion_stream.onnx`), "
                                 "before any corpus held a flite voice,"),
          "articulation-flite-run2": ("`kfusion bench articulation --engine flite`: the stage-22 model, whose corpus "
                                      "added flite's other voices (kal16, slt, awb), shipped for an hour,"),
          "articulation-flite-vt088": ("`kfusion bench articulation --engine flite --vocal-tract 0.88 --plot ''`: the shipped stage-23 model on flite's held-out voice with every frequency scaled by 0.88,"),
          "articulation-flite-vt095": ("`kfusion bench articulation --engine flite --vocal-tract 0.95 --plot ''`: the shipped stage-23 model on flite's held-out voice with every frequency scaled by 0.95,"),
          "articulation-flite-vt105": ("`kfusion bench articulation --engine flite --vocal-tract 1.05 --plot ''`: the shipped stage-23 model on flite's held-out voice with every frequency scaled by 1.05,"),
          "articulation-flite-vt115": ("`kfusion bench articulation --engine flite --vocal-tract 1.15 --plot ''`: the shipped stage-23 model on flite's held-out voice with every frequency scaled by 1.15,"),
          "articulation-flite-vt130": ("`kfusion bench articulation --engine flite --vocal-tract 1.3 --plot ''`: the shipped stage-23 model on flite's held-out voice with every frequency scaled by 1.3,"),
          "articulation-festival": ("`kfusion bench articulation --engine festival`: the shipped stage-23 model on "
                                    "festival's English voices, which every training corpus holds, reading the "
                                    "benchmark's sentences (the set-up of shared/RECIPES.md),"),
          "articulation-intl": ("`kfusion bench articulation --engine intl`: the shipped stage-23 model on festival's "
                                "Italian, Czech, Finnish and Catalan voices that no corpus holds, each reading "
                                "sentences in its own language,"),
          "articulation-grid": ("`kfusion bench articulation --engine grid`: the shipped stage-23 model on real "
                                "speech, the pack's GRID test clips, their p, b and m timed by aligning festival's "
                                "renditions of their words,"),
          "articulation-flite-run3": ("`kfusion bench articulation --engine flite`: the shipped stage-23 model (half "
                                      "stage 6, half a fine-tune with 60 min of flite speech; `kfusion mix`),"),
          "capacity-at96-run2": ("`kfusion bench capacity --at 96 --repeats 3`, after the shipped model began asking "
                                 "for a lip seal,"),
          "latency-run7-h200-cuda": ("`kfusion bench latency --streams 1,128,256 --seconds 5 --providers cuda`, on "
                                     "the lent GPU machine (one H200, 16 CPU cores) with onnxruntime-gpu 1.31.1, not on "
                                     "the 2-vCPU machine,"),
          "latency-run7-h200-cpu": ("`kfusion bench latency --streams 1,128,256 --seconds 5 --providers cpu`, its peer: "
                                    "straight after, on the same GPU machine, with the CPU provider,"),
          "providers": "`kfusion bench providers`, on the lent GPU machine (one H200, 16 CPU cores),",
          "scaleout-run6-h200-cuda": ("`kfusion bench scaleout --streams 256,512 --workers 4 --client-procs 6 "
                                      "--seconds 5 --providers cuda`, on the lent GPU machine (one H200, 16 CPU cores; "
                                      "every worker opens its own CUDA session),"),
          "scaleout-run6-h200-cpu": ("the same with `--providers cpu`, straight after on the same GPU machine: the "
                                     "CPU provider's peer,"),
          "scaleout-run7-h200-cuda": ("`kfusion bench scaleout --streams 768,1024 --workers 8 --client-procs 6 "
                                      "--seconds 5 --providers cuda`, on the same GPU machine,"),
          "scaleout-run7-h200-cpu": "the same with `--providers cpu`, straight after, its peer,",
          "scaleout-run2": "`kfusion bench scaleout --streams 48,64,80,96`, a finer grid run straight after the first,",
          "scaleout-run3": ("`kfusion bench scaleout --streams 96,112,128`, after the direct path and the cheaper "
                            "export, probing 128,"),
          "scaleout-run4": ("`kfusion bench scaleout --streams 64,80,96`, straight after run 3 on a fast stretch "
                            "of the host,"),
          "scaleout-run5": "`kfusion bench scaleout --streams 96,128,160`, with the lean load clients (the default),",
          "scaleout-run8": "`kfusion bench scaleout --streams 96,128` (2026-11-26, straight after capacity-at96-run3),",
          "scaleout-run9": "`kfusion bench scaleout --streams 96,128` again, on the leaner audio path (commit 90f02e7),",
          "scaleout-run10-chunk40": "`kfusion bench scaleout --streams 96,128 --chunk-ms 40` (40 ms of audio per message),",
          "scaleout-run11-chunk40": "`kfusion bench scaleout --streams 128,144,160 --chunk-ms 40`, straight after run 10,",
          "scaleout-run12": "`kfusion bench scaleout --streams 96,128` (20 ms chunks), straight after run 11, as its peer,",
          **{f"scaleout-run{k}-chunk40": f"`kfusion bench scaleout --streams 128 --chunk-ms 40`, repeat {k - 12} of 3,"
             for k in (13, 14, 15)},
          "scaleout-run16-chunk40-30s": "`kfusion bench scaleout --streams 128,136 --seconds 30 --chunk-ms 40`,",
          **{f"scaleout-run{k}-chunk40-30s": "`kfusion bench scaleout --streams 128 --seconds 30 --chunk-ms 40`,"
             for k in (17, 18)},
          "latency-run8-chunk40": "`kfusion bench latency --streams 1,16,64 --chunk-ms 40 --no-startup` (40 ms chunks),",
          "latency-run9": "`kfusion bench latency --streams 1,16,64 --no-startup` (20 ms chunks), straight after run 8, as its peer,",
          "scaleout-run19-chunk40-120s": "`kfusion bench scaleout --streams 128 --seconds 120 --chunk-ms 40`,",
          "capacity-at128-run2": "`kfusion bench capacity --at 128 --repeats 3` (2026-11-26, a fresh session),",
          "capacity-at96-run3": "`kfusion bench capacity --at 96 --repeats 3` (2026-11-26, straight after capacity-at128-run2),",
          "capacity-at128-run3-h200-pinned": (
              "`kfusion bench capacity --at 128 --repeats 3 --server-cpus 0 --client-cpus 1-7 --client-procs 4`, on "
              "the lent GPU machine (16 CPU cores; CPU provider): the server process alone on one core, the clients "
              "on seven others,"),
          "capacity-at128-run4-h200-2cores": (
              "`kfusion bench capacity --at 128 --repeats 2 --server-cpus 0-1 --client-cpus 0-1`, straight after on "
              "the same machine: server and clients sharing two cores, as on the 2-vCPU build machine,"),
          "capacity-at144-run1-h200-pinned": "the pinned set-up of capacity-at128-run3-h200-pinned at 144 streams,",
          "capacity-at160-run1-h200-pinned": "the pinned set-up of capacity-at128-run3-h200-pinned at 160 streams,",
          "capacity-at192-run1-h200-pinned": "the pinned set-up of capacity-at128-run3-h200-pinned at 192 streams,",
          "capacity-at128-run9-h200-pinned": ("run 3's pinned set-up (server on core 0, clients on cores 1-7) with 4 "
                                              "repeats, later the same day on a fresh lent machine of the same kind,"),
          "capacity-at128-run5-pinned": ("`kfusion bench capacity --at 128 --repeats 2 --server-cpus 0 --client-cpus 1` on "
                                         "the 2-vCPU build machine (2026-11-26): the server on one vCPU, the clients on "
                                         "the other,"),
          "capacity-at128-run6": "`kfusion bench capacity --at 128 --repeats 2`, unpinned, straight after run 5,",
          "capacity-at128-run7-pinned": "run 5's pinned set-up again, straight after run 6,",
          "capacity-at128-run8": "unpinned again, straight after run 7,",
          "capacity-at96-run4": ("`kfusion bench capacity --at 96 --repeats 3` on the leaner audio path (commit 90f02e7), "
                                 "on a slow stretch of the host,"),
          "capacity-at128-run12": "`kfusion bench capacity --at 128 --repeats 3`, straight after capacity-at96-run4,",
          "capacity-at128-run13-chunk40": ("`kfusion bench capacity --at 128 --repeats 3 --chunk-ms 40` (clients send 40 ms "
                                           "of audio per message, half the messages of the default 20 ms),"),
          "capacity-at128-run14": ("`kfusion bench capacity --at 128 --repeats 3` (20 ms chunks), straight after "
                                   "capacity-at128-run13-chunk40, as its peer,"),
          "capacity-run12-chunk40": ("`kfusion bench capacity --start 96 --chunk-ms 40` (40 ms of audio per client "
                                     "message), straight after capacity-at128-run14,"),
          "capacity-run13": ("`kfusion bench capacity --start 96` (20 ms chunks), straight after "
                             "capacity-run12-chunk40, as its peer,"),
          "capacity-at128-run16-30s": ("`kfusion bench capacity --at 128 --repeats 5 --seconds 30` again, after "
                                       "scaleout-run21-30s and capacity-run15-chunk40 on the same machine,"),
          "capacity-run14": ("`kfusion bench capacity` (the default search, 20 ms chunks), on a "
                             "fresh build machine of the same kind (kernel build fc-v657 where the earlier runs had "
                             "fc-v782; AMD EPYC, one thread per core; speed probe 25-61 us per row),"),
          "capacity-run15-chunk40": ("`kfusion bench capacity --start 128 --chunk-ms 40` on the same fresh build machine "
                                     "as capacity-run14, an hour later (a slower stretch by the end: a pure-Python "
                                     "loop took 2.04 s against 1.27 s before the run),"),
          "latency-run10": "`kfusion bench latency` (2026-11-26, on the fresh build machine of capacity-run14),",
          "scaleout-run21-30s": ("`kfusion bench scaleout --streams 128,160 --seconds 30` (20 ms chunks), on the fresh "
                                 "build machine of capacity-run14,"),
          "capacity-at128-run15-30s": ("`kfusion bench capacity --at 128 --repeats 5 --seconds 30` (20 ms chunks), "
                                       "straight after capacity-run14 on the same machine,"),
          **{f"capacity-at{n}-run10-h200-{when}": (
              f"run 3's pinned set-up (server on core 0, clients on cores 1-7), 2 repeats of {n} streams, {label}; "
              "one lent machine, the two engines alternating at each count,")
             for when, label, counts in (
                 ("before", "on the engine as it was before commit 90f02e7 made the audio path leaner", (128, 144, 160)),
                 ("after", "on the engine from commit 90f02e7, which made the audio path leaner",
                  (128, 144, 160, 176, 192)))
             for n in counts},
          **{f"capacity-at{n}-run11-h200-after": (
              f"run 10's pinned set-up on a second, fresh lent machine of the same kind, 3 repeats of {n} streams, on "
              "the engine from commit 90f02e7 (the leaner audio path), to check run 10's after-figures,")
             for n in (128, 144, 160)}}
