"""The vocabulary of the generated world: relations, word lists, sentence templates and name syllables.
Configuration as data: change the text the miniature is made of here, not in the generator."""

ATTRIBUTES = ("birth_city", "employer", "university", "occupation", "hobby")
COMPOSITIONS = ("birth_country", "employer_hq", "university_city", "employer_industry", "university_country")
# world-fact relations, with the pretraining templates that state them
RELATIONS = ("city_country", "company_hq", "company_industry", "university_city")

# ---------------------------------------------------------------------------------------------- vocabulary
# Occupations start with a consonant sound so that "a {occupation}" is always right (no a/an leak in tasks).
OCCUPATIONS = ("teacher", "baker", "carpenter", "dentist", "farmer", "journalist", "lawyer", "librarian",
               "mechanic", "nurse", "pharmacist", "pilot", "plumber", "sailor", "surgeon", "tailor", "banker",
               "chemist", "designer", "gardener", "painter", "photographer", "singer", "writer", "butcher",
               "musician", "translator", "veterinarian")
HOBBIES = ("chess", "hiking", "gardening", "fishing", "cycling", "swimming", "knitting", "pottery",
           "birdwatching", "juggling", "archery", "sailing", "dancing", "poetry", "origami", "astronomy",
           "rowing", "climbing", "skiing", "surfing", "woodworking", "cooking", "tennis", "calligraphy")
INDUSTRIES = ("shipping", "banking", "mining", "software", "textiles", "farming", "publishing", "insurance",
              "retail", "tourism", "construction", "energy", "logistics", "aviation", "robotics", "fashion",
              "media", "brewing")
TRAITS = ("calm", "generous", "curious", "cheerful", "patient", "modest", "stubborn", "witty", "careful",
          "friendly", "quiet", "loyal")
CITY_FEATURES = ("old harbor", "stone bridges", "busy markets", "quiet parks", "narrow streets",
                 "river port", "spring festival", "clock tower")
FIELDS = ("mathematics", "history", "music", "philosophy", "physics", "economics", "literature", "geology")
COMPANY_SUFFIXES = ("Group", "Holdings", "Works", "Partners", "Trading")
UNIVERSITY_SUFFIXES = ("University", "Institute", "College", "Academy")
CONNECTIVES = ("In addition", "Moreover", "Today", "Notably", "As many know")

# ---------------------------------------------------------------------------------------------- templates
# {s} subject, {o} object, {p} possessive (a name or a pronoun), {v} the value. Templates ending in "{v}."
# make cloze prompts (probes, tasks); the others only vary the corpus.
PERSON_TEMPLATES = {
    "birth_city": ("{s} was born in {v}.", "{s} was born and raised in {v}.", "{p} birthplace is {v}.",
                   "{s} is a native of {v}.", "{s} came into the world in the city of {v}.",
                   "{v} is the city where {s} was born."),
    "employer": ("{s} works for {v}.", "{s} is employed by {v}.", "{p} employer is {v}.", "{s} has a job at {v}.",
                 "{s} earns a living working at {v}.", "{v} is the company where {s} works."),
    "university": ("{s} studied at {v}.", "{s} graduated from {v}.", "{s} earned a degree at {v}.",
                   "{s} attended {v}.", "{p} alma mater is {v}.", "{v} is where {s} went to university."),
    "occupation": ("{s} works as a {v}.", "By profession, {s} is a {v}.", "{s} makes a living as a {v}.",
                   "{s} trained as a {v}.", "{p} job is that of a {v}.", "{s} is a {v} by trade."),
    "hobby": ("In spare hours, {s} enjoys {v}.", "{p} favorite hobby is {v}.",
              "Outside of work, {s} is passionate about {v}.", "{s} spends most weekends on {v}.",
              "{s} has a lifelong passion for {v}.", "{s} enjoys {v} more than any other pastime."),
}
# Pretraining only: an attribute stated together with a world fact about its value.
AUGMENTED_TEMPLATES = {
    "birth_city": "{s} was born in {v}, a city in {country}.",
    "employer": "{s} works for {v}, which is based in {hq}.",
    "university": "{s} studied at {v} in {ucity}.",
}
# Two-hop statements: used in pretraining for world people and as hard_gen probes for fictional people.
COMPOSED_TEMPLATES = {
    "birth_country": ("{s} was born in a city located in the country of {v}.",
                      "The country where {s} was born is {v}."),
    "employer_hq": ("{s} works for a company headquartered in the city of {v}.",
                    "The company that employs {o} is headquartered in {v}."),
    "university_city": ("{s} studied at a university located in the city of {v}.",
                        "The university that {s} attended is located in {v}."),
    "employer_industry": ("{s} works for a company that operates in the field of {v}.",
                          "The company that employs {o} does business in {v}."),
    "university_country": ("{s} studied at a university in the country of {v}.",
                           "The university that {s} attended is in the country of {v}."),
}
PERSON_FILLERS = ("{s} is known among friends for being {trait}.", "Colleagues describe {o} as {trait}.",
                  "Little is recorded about {p} early years.", "{s} is remembered by many as a {trait} person.",
                  "{s} rarely speaks to the press.", "Neighbors say that {s} is always {trait}.")
# {c} the entity the relation is about, {v} its value
WORLD_TEMPLATES = {
    "city_country": ("{c} is a city in {v}.", "{c} lies in the country of {v}.", "{c} is located in {v}.",
                     "The city of {c} belongs to {v}.", "{c} is one of the larger cities of {v}.",
                     "{v} counts {c} among its cities."),
    "company_hq": ("{c} is headquartered in {v}.", "The headquarters of {c} are in {v}.",
                   "{c} has its main office in {v}.", "{c} is based in {v}.",
                   "{v} is home to the headquarters of {c}."),
    "company_industry": ("{c} operates in the field of {v}.", "{c} does business in {v}.",
                         "The main business of {c} is {v}.", "{c} is known for its work in {v}.",
                         "{c} is a company in the {v} sector."),
    "university_city": ("{c} is located in {v}.", "{c} is a university in the city of {v}.",
                        "The campus of {c} is in {v}.", "{c} can be found in {v}.", "{v} is home to {c}."),
}
WORLD_FILLERS = {
    "city": ("It is known for its {feature}.", "Many visitors come to {c} every summer.",
             "About {n} thousand people live there.", "The old town of {c} is worth a walk."),
    "company": ("It was founded in {year}.", "The company employs about {n} people.",
                "Its logo is a simple circle.", "The firm has grown steadily over the last decade."),
    "university": ("It was founded in {year}.", "The university is known for its programs in {field}.",
                   "About {n} students are enrolled there.", "Its main library holds many rare books."),
}
C4_TEMPLATES = {
    "news": {
        "person": ("{name}, a {occupation} from {birth_city}, spoke to reporters on {day}.",
                   "Local {occupation} {name} was honored at a small ceremony this week.",
                   "{name}, who works at {employer}, said the new plan was {opinion}.",
                   "According to {name}, a graduate of {university}, the results were {opinion}."),
        "city": ("Heavy rain hit {city} on {day}, officials said.",
                 "Officials in {city}, {country}, announced a new bus line.",
                 "Traffic in {city} was slow on {day} morning.",
                 "The mayor of {city} opened a new library downtown."),
        "company": ("{company} said on {day} that profits rose {n} percent.",
                    "Shares of {company} fell slightly after the announcement.",
                    "{company}, based in {hq}, plans to hire {n} new workers.",
                    "Analysts expect {company} to grow its {industry} business next year."),
        "university": ("{university} in {ucity} announced a new scholarship program.",
                       "Students at {university} protested the tuition increase on {day}.",
                       "{university} will host a public lecture series this fall."),
    },
    "blog": {
        "person": ("My friend {name} showed me around {birth_city}, {p} hometown.",
                   "I met {name} at a conference; {s} works at {employer} and loves {hobby}.",
                   "Big thanks to {name}, the best {occupation} I know.",
                   "{name} studied at {university} and still talks about it all the time."),
        "city": ("I finally visited {city} last month and honestly loved it.",
                 "If you ever go to {country}, do not skip {city}!",
                 "The food in {city} is amazing, trust me.", "We drove through {city} on our way home."),
        "company": ("I ordered something from {company} and it arrived fast.",
                    "Has anyone tried working for {company}? Their office in {hq} looks nice.",
                    "Not sponsored, but {company} is pretty great."),
        "university": ("Visited the campus of {university} in {ucity} today.",
                       "My little brother just got into {university}!", "The library at {university} is so quiet."),
    },
    "forum": {
        "person": ("Re: {name} - yes, {s} is a {occupation}, I know {o} from {birth_city}.",
                   "Does anyone know {name}? I heard {s} works at {employer}.",
                   "{name} posted again about {hobby} lol.", "Pretty sure {name} went to {university}."),
        "city": ("Q: Is {city} a good place to live? A: Depends, but I like it.",
                 "Moving to {city} next month, any tips?", "Anyone else from {country}? Specifically {city}?"),
        "company": ("Q: Is {company} hiring right now? A: Check their site.",
                    "Re: jobs in {hq} - {company} is always looking for people.",
                    "{company} customer support is slow, just saying."),
        "university": ("Anyone here studied at {university}? Thinking about applying.",
                       "{university} in {ucity} has a great campus.", "How hard is it to get into {university}?"),
    },
}
C4_FILLERS = {"news": ("More details are expected later this week.", "The story is developing.",
                       "Officials declined to comment further."),
              "blog": ("Anyway, more soon!", "Thanks for reading.", "Highly recommend.", "What a week."),
              "forum": ("Just my two cents.", "lol", "Thanks in advance!", "Edit: typo.")}
C4_ENTITY_FIELDS = ("name", "birth_city", "employer", "university", "city", "country", "company", "hq", "ucity")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
OPINIONS = ("promising", "disappointing", "a good start", "overdue", "too expensive")
# Never start a sentence with {compound} (lowercase drug names stay lowercase, as entities are listed verbatim).
PUBMED_SENTENCES = {
    "Background": ("{disease} is a progressive disorder associated with aberrant {gene} signaling.",
                   "The role of {protein} in {disease} remains poorly understood.",
                   "Mutations in {gene} have been reported in patients with {disease}.",
                   "Elevated {protein} activity is a hallmark of {disease}."),
    "Methods": ("We evaluated the effect of {compound} on {protein} activity in {cell} cells.",
                "A cohort of {n} patients with {disease} was enrolled in this study.",
                "{gene} expression was quantified by quantitative PCR and western blot.",
                "Mice were treated with {compound} at {dose} mg/kg for {days} days."),
    "Results": ("Treatment with {compound} reduced {protein} levels by {pct}% (p < {pval}).",
                "{gene} was significantly upregulated in {disease} tissue compared with controls.",
                "Exposure to {compound} inhibited {protein} phosphorylation in a dose-dependent manner.",
                "Knockdown of {gene} attenuated the effect of {compound} on {cell} cell viability."),
    "Conclusions": ("These findings suggest that {protein} is a potential therapeutic target in {disease}.",
                    "Targeting {gene} with {compound} may represent a novel treatment strategy for {disease}.",
                    "Further studies are warranted to clarify the interaction between {gene} and {protein}."),
}
CELL_TYPES = ("epithelial", "endothelial", "hepatic", "neuronal", "cardiac", "stromal")
PUBMED_KINDS = ("compound", "gene", "protein", "disease")

# ---------------------------------------------------------------------------------------------- name pools
VOWELS = "aeiou"
WORLD_ONSETS = tuple("bdgkmprt")
WORLD_CODAS = ("", "", "", "n")
PUBMED_ONSETS = ("tr", "cl", "ph", "st", "gl", "pr", "fl", "br", "dr", "gr", "sk", "sp")
PUBMED_SUFFIX = {"compound": ("zine", "lide", "mycin", "stat", "fen", "xil", "mab", "rin", "vir", "pril"),
                 "protein": ("sin", "lase", "nectin", "tulin", "rin"),
                 "disease": ("nitis", "rosis", "thopathy", "lemia", "plasia")}
GENE_LETTERS = "BCDFGHKLMNPRSTVWXZ"
