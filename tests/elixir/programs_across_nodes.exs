# Runs docs/elixir.md's "programs-across-nodes" block on two Erlang nodes on loopback:
# node A's worker compiles a program and exports it, the document travels to node B as a
# message, and node B's worker imports it and must answer exactly as node A's does, while
# a program built on node B from the signature alone must not.
#
# Usage: DSPEX_EXECUTABLE=PATH elixir programs_across_nodes.exs BLOCK_FILE API_BASE
# The last line is "elixir docs: N passed, M failed"; exit status 0 only when all passed.

[block_file, api_base] = System.argv()
dspex = System.fetch_env!("DSPEX_EXECUTABLE")

[jiffy | _] = Path.wildcard("/usr/lib/erlang/lib/jiffy-*/ebin")
:code.add_patha(String.to_charlist(jiffy))

# Distribution on loopback only: epmd and both nodes listen on 127.0.0.1.
System.put_env("ERL_EPMD_ADDRESS", "127.0.0.1")
{_, 0} = System.cmd("epmd", ["-daemon"])
suffix = :erlang.unique_integer([:positive])
{:ok, _} = Node.start(:"dspex_a_#{suffix}@127.0.0.1", :longnames)
Node.set_cookie(:dspex_docs)

{:ok, peer, node_b} =
  :peer.start(%{name: :"dspex_b_#{suffix}", host: ~c"127.0.0.1", longnames: true,
                args: [~c"-setcookie", ~c"dspex_docs", ~c"-pa", String.to_charlist(jiffy)]})

# Node B is a plain Erlang node: it gets this node's code paths (Elixir's own library).
:ok = :rpc.call(node_b, :code, :add_paths, [:code.get_path()])

# Node B's side of the test: receives the document as a message and serves it there.
node_b_side = """
defmodule NodeBSide do
  def serve(worker, lm, signature, question) do
    receive do
      {:program, from, doc} ->
        %{"success" => true} = DSPexWorker.call(worker, "configure_lm", lm)
        imported = CompiledPrograms.import(worker, doc, "qa_from_a")
        served = DSPexWorker.call(worker, "execute_program", %{"program_id" => "qa_from_a", "inputs" => question})
        %{"success" => true} = DSPexWorker.call(worker, "create_program", %{"id" => "plain", "signature" => signature})
        plain = DSPexWorker.call(worker, "execute_program", %{"program_id" => "plain", "inputs" => question})
        send(from, {:served, node(), imported, served, plain})
    end
  end
end
"""

# The block's modules and node B's side, compiled here and loaded on node B as well
# (modules compiled in memory are not fetched by a remote node's code server).
for {module, binary} <- Code.compile_string(File.read!(block_file), block_file) ++
                          Code.compile_string(node_b_side, "node_b_side.ex") do
  {:module, ^module} = :rpc.call(node_b, :code, :load_binary, [module, ~c"docs/elixir.md", binary])
end

lm = %{"model" => "openai/learn", "api_base" => api_base, "api_key" => "sk-two-nodes-test-0000", "cache" => false}
signature = "question -> answer"
trainset = for q <- ["ab", "abc", "xyz", "hello"], do: %{"question" => q, "answer" => String.reverse(q)}
question = %{"question" => "dspex"}

worker_a = DSPexWorker.start(dspex)
worker_b = :rpc.call(node_b, DSPexWorker, :start, [dspex])
true = node(worker_b) == node_b

%{"success" => true} = DSPexWorker.call(worker_a, "configure_lm", lm)
%{"success" => true} = DSPexWorker.call(worker_a, "create_program", %{"id" => "qa", "signature" => signature})
{compiled_id, document} = CompiledPrograms.compile_and_export(worker_a, "qa", trainset)
%{"success" => true, "result" => %{"outputs" => outputs_a}} =
  DSPexWorker.call(worker_a, "execute_program", %{"program_id" => compiled_id, "inputs" => question})

me = self()

Node.spawn(node_b, NodeBSide, :serve, [worker_b, lm, signature, question])
|> send({:program, me, document})

results =
  receive do
    {:served, where, imported, served, plain} ->
      outputs_b = served["result"]["outputs"]
      if imported["success"] != true, do: IO.puts("import_program on node B: #{inspect(imported)}")
      [
        {"node B imported the document", where == node_b and imported["success"] == true},
        {"node A's compiled program answers right", outputs_a["answer"] == "xepsd"},
        {"node B answers as node A", outputs_b == outputs_a},
        {"the plain program on node B does not", plain["result"]["outputs"]["answer"] != outputs_a["answer"]}
      ]
  after
    90_000 -> [{"node B answered", false}]
  end

for {what, ok} <- results, do: IO.puts("#{if ok, do: "ok", else: "FAIL"} #{what}")
:peer.stop(peer)
passed = Enum.count(results, fn {_, ok} -> ok end)
IO.puts("elixir docs: #{passed} passed, #{length(results) - passed} failed")
System.halt(if passed == length(results), do: 0, else: 1)
